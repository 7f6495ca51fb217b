"""torchrun reads the script's arguments too: lesion's flags reach lesion after `--`."""
import pytest
from torch.distributed.run import get_args_parser

from lesion.cli import build_parser


def test_signals_reach_lesion_after_a_double_dash():
    launched = get_args_parser().parse_args(
        ["--nproc-per-node", "2", "-m", "lesion", "--", "search", "--signals", "noise,attribution", "--out", "h.json"])
    assert launched.module and launched.training_script == "lesion"
    assert launched.training_script_args == ["search", "--signals", "noise,attribution", "--out", "h.json"]
    assert build_parser().parse_args(launched.training_script_args).signals == "noise,attribution"


def test_signals_without_the_double_dash_are_torchruns():
    with pytest.raises(SystemExit) as stopped:  # ambiguous: --signals-to-handle / --signals_to_handle
        get_args_parser().parse_args(["--nproc-per-node", "2", "-m", "lesion", "search", "--signals", "noise"])
    assert stopped.value.code == 2
