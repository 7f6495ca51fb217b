"""Reports: result JSON of a run folder -> figures -> one self-contained HTML page + markdown."""
from .browser import RenderCheck, check_render
from .render import build_report

__all__ = ["build_report", "check_render", "RenderCheck"]
