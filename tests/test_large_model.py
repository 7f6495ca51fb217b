"""On the real 1.5B model (qwen2.5-coder-1.5b, 6.7 GB dequantised): skipped unless `-m large`
or LESION_LARGE=1. Run it alone, under the heavy-job lock:
``flock /tmp/lesion-heavy.lock python -m pytest -q -m large tests/test_large_model.py``."""
import pytest

from lesion import load_model
from lesion.method.study import Study
from lesion.texts.text import BOOKENDS


@pytest.mark.large
def test_stage1_top_is_position_zero_down_proj_in_layers_1_2_26():
    # The authors' log for Qwen2.5-1.5B-Instruct has its top ten all mlp.down_proj at token 0,
    # in layers 1, 2 and 26; the coder checkpoint keeps them (issue 17).
    lm = load_model("qwen2.5-coder-1.5b", progress=False)
    ranking = Study.create(lm, BOOKENDS).rank("noise", keep=12, samples=5, progress=False, use_cache=False)
    top = ranking.neurons[:10]
    assert all(n.module.endswith(".mlp.down_proj") for n in top)
    assert list(ranking.positions[:10]) == [0] * 10
    assert {int(n.module.split(".")[2]) for n in top} <= {1, 2, 26}
    assert {1, 2, 26} <= {int(n.module.split(".")[2]) for n in top}
