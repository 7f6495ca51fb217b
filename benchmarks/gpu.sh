#!/usr/bin/env bash
# GPU figures in one short run (target: under ten minutes on one H100-class GPU).
#
#   benchmarks/gpu.sh [OUT]          # OUT: a folder for the runs (default: gpu-runs)
#   GPU_SH_MODELS="smollm2-135m" benchmarks/gpu.sh    # only the default model
#
# 1. Checks CUDA against the CPU on the default model: `lesion scan` on both, float32; the
#    same top neuron, the same critical set, Delta within 1e-3. Exit 1 if not.
# 2. At the paper's scale (benchmarks/gpu_scale.py): Qwen2.5-7B, Llama-3.1-8B and Qwen2.5-32B
#    built from their configs with random weights on the GPU, bfloat16 then float32 where it
#    fits: Stage 1 against its floor, masked rows and a search's rows per second, and each
#    against what `lesion plan` predicts (measured / planned, and the TFLOPS that fits).
# 3. `torchrun -m lesion search` on this machine's CPU cores, 1, 2 and 4 ranks (threads split
#    evenly), same rows: rows per second and whether every run finds the same heel.
# 4. For each model (default model, then the 1.5B Qwen when it is installed) and each dtype
#    (float32, bfloat16), prints Stage 1 against its floor (K = 100 bare forwards of the
#    same noisy batches, no hooks), masked rows per second (64 rows masking block 0, so each
#    is a full forward), and the wall time of `lesion search` end to end.
#
# Each part after the first starts only while the run has time left (ten minutes in all).
# Without CUDA it stops at once with one line and exit code 2. GPU_SH_DEVICE=cpu runs the
# same steps on the CPU with a small K, to check the script itself where no GPU is lent.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-runs}
DEVICE=${GPU_SH_DEVICE:-cuda}
MODELS=${GPU_SH_MODELS:-"smollm2-135m qwen2.5-coder-1.5b"}
SAMPLES=${GPU_SH_SAMPLES:-100}
export LESION_NO_PROGRESS=1

if [ "$DEVICE" = cuda ] && ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "benchmarks/gpu.sh: no CUDA device here (torch.cuda.is_available() is False): run it on a GPU machine, or GPU_SH_DEVICE=cpu to check the script" >&2
    exit 2
fi
mkdir -p "$OUT"
python - "$OUT" "$DEVICE" "$SAMPLES" <<'EOF'
import sys
import time
from pathlib import Path

import torch

out, device = sys.argv[1], sys.argv[2]
print(f"device: {device}" + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""), flush=True)
print(f"torch {torch.__version__}", flush=True)
EOF

echo "== 1. CUDA against CPU, default model, float32 =="
for dev in cpu "$DEVICE"; do
    start=$(date +%s.%N)
    lesion scan --device "$dev" --dtype float32 --samples "$SAMPLES" --no-cache --quiet --out "$OUT/scan-$dev" > "$OUT/scan-$dev.log"
    echo "scan on $dev: $(python -c "print(f'{$(date +%s.%N) - $start:.1f} s')")"
done
python - "$OUT/scan-cpu" "$OUT/scan-$DEVICE" <<'EOF'
import json
import sys
from pathlib import Path

cpu, dev = (Path(p) for p in sys.argv[1:3])
read = lambda folder, name: json.loads((folder / name).read_text())
top = [read(f, "ranking.json")["neurons"][0] for f in (cpu, dev)]
sets = [read(f, "critical.json") for f in (cpu, dev)]
same_top, same_set = top[0] == top[1], sets[0]["neurons"] == sets[1]["neurons"]
gap = abs(sets[0]["delta"] - sets[1]["delta"])
print(f"top neuron: {top[0]} (cpu) vs {top[1]} ({dev.name[5:]}): {'same' if same_top else 'DIFFERENT'}")
print(f"critical set: {len(sets[0]['neurons'])} vs {len(sets[1]['neurons'])} neurons: {'same' if same_set else 'DIFFERENT'}")
print(f"Delta: {sets[0]['delta']:.6f} vs {sets[1]['delta']:.6f}, |difference| {gap:.2e} (limit 1e-3)")
if not (same_top and same_set and gap <= 1e-3):
    sys.exit("CUDA and CPU disagree: see the lines above")
EOF

echo "== 2. the paper's scale: random-weight 7B, 8B and 32B models against lesion plan =="
if [ "$DEVICE" = cuda ]; then
    python benchmarks/gpu_scale.py --budget-s 200 --out "$OUT/scale.jsonl" || echo "gpu_scale.py failed"
else
    python benchmarks/gpu_scale.py --device cpu --tiny --samples 8 --rows 8 --search-rows 40 --dtypes float32 \
        --models llama-3.1-8b --out "$OUT/scale.jsonl" || echo "gpu_scale.py failed"
fi

echo "== 3. torchrun search on the CPU cores: 1, 2 and 4 ranks =="
CORES=$(nproc)
for ranks in 1 2 4; do
    if [ "$SECONDS" -gt 420 ] || [ "$ranks" -gt "$CORES" ]; then
        echo "$ranks rank(s): skipped ($SECONDS s spent, $CORES cores)"
        continue
    fi
    if ! OMP_NUM_THREADS=$((CORES / ranks)) torchrun --standalone --nproc-per-node "$ranks" -m lesion search \
            --device cpu --epsilon 8 --max-rows "${GPU_SH_TORCHRUN_ROWS:-400}" --time-budget 90 --quiet \
            --out "$OUT/torchrun-$ranks.json" > "$OUT/torchrun-$ranks.log" 2>&1; then
        echo "$ranks rank(s): failed: $(tail -1 "$OUT/torchrun-$ranks.log")"
        continue
    fi
    python - "$OUT/torchrun-$ranks.json" "$ranks" <<'EOF'
import json
import sys

from pathlib import Path

path, ranks = Path(sys.argv[1]), sys.argv[2]
heel = json.loads(path.read_text())
one = json.loads((path.parent / "torchrun-1.json").read_text())
same = "same heel as 1 rank" if (one["neurons"], one["delta"]) == (heel["neurons"], heel["delta"]) else "HEEL DIFFERS"
print(f"{ranks} rank(s): {heel['rows']} rows in {heel['seconds']:.1f} s (signals included), "
      f"{heel['rows'] / heel['seconds']:.2f} rows/s; {len(heel['neurons'])} neurons, Delta {heel['delta']:.3f}: {same}")
EOF
done

echo "== 4. speed: Stage 1 against its floor, masked rows per second, a search =="
for model in $MODELS; do
    for dtype in float32 bfloat16; do
        if [ "$SECONDS" -gt 480 ]; then  # keep the whole run under ten minutes
            echo "$model $dtype: skipped: $SECONDS s spent, the run stays under ten minutes"
            continue
        fi
        python - "$model" "$dtype" "$DEVICE" "$SAMPLES" <<'EOF' || echo "$model $dtype: skipped (see the line above)"
import sys
import time

import torch

sys.path.insert(0, "benchmarks")
from gpu_scale import ALPHA, BATCH, SEED, timed  # noqa: E402 (the benchmarks' helpers, one copy)
from stage1_speed import floor_seconds  # noqa: E402

from lesion.masking.ablation import masked_nll  # noqa: E402
from lesion.errors import LesionError  # noqa: E402
from lesion.model.loading import load_model  # noqa: E402
from lesion.method.rankers import rank_by_noise  # noqa: E402
from lesion.method.study import Study  # noqa: E402

model, dtype, device, samples = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ROWS = 64

try:
    start = time.perf_counter()
    lm = load_model(model, dtype=dtype, device=device, progress=False)
except LesionError as e:
    sys.exit(f"{model}: not loadable here: {e}")
load_s = time.perf_counter() - start
study = Study.create(lm)
ids, index = study.input_ids, study.index
stage1 = timed(lambda: rank_by_noise(lm.model, ids, index, samples=samples, batch_size=BATCH, seed=SEED,
                                     progress=False), device)
bare = min(floor_seconds(lm.model, ids, samples, BATCH, ALPHA, SEED) for _ in range(2))
sets = [[n] for n in index.neurons(range(ROWS))]  # block 0: no shared prefix, a full forward per row
rows = timed(lambda: masked_nll(lm.model, ids, index, sets, max_rows=32), device)
peak = f", peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device == "cuda" else ""
print(f"{model} {dtype}: load {load_s:.1f} s; Stage 1 (K={samples}) {stage1:.2f} s against floor {bare:.2f} s "
      f"(ratio {stage1 / bare:.2f}); masked rows {ROWS / rows:.1f} rows/s{peak}", flush=True)
EOF
        start=$(date +%s.%N)
        if lesion search --model "$model" --dtype "$dtype" --device "$DEVICE" --quiet --time-budget 30 \
                --out "$OUT/search-$model-$dtype.json" > "$OUT/search-$model-$dtype.log" 2>&1; then
            echo "$model $dtype: lesion search end to end $(python -c "print(f'{$(date +%s.%N) - $start:.1f} s')")"
        else
            echo "$model $dtype: lesion search failed: $(tail -1 "$OUT/search-$model-$dtype.log")"
        fi
    done
done
