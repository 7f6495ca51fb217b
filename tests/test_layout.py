"""The package's shape: no import cycle between lesion's modules (imports inside functions
included), checked by the same script CI runs."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "import_cycles.py"


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_lesion_has_no_import_cycle():
    done = run_script()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "import cycles: 0" in done.stdout


def write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


@pytest.mark.parametrize("files, cycle", [
    # an import hidden in a function still counts
    ({"__init__.py": "", "a.py": "from .b import f\n", "b.py": "def f():\n    from .a import g\n"},
     "pkg.a, pkg.b"),
    # `from .sub import name` reaches the package's __init__, which imports the first module
    ({"__init__.py": "", "a.py": "from .sub import thing\n", "sub/__init__.py": "from ..a import x\n"},
     "pkg.a, pkg.sub"),
    # `from . import b` names the module b, absolute imports resolve too
    ({"__init__.py": "", "a.py": "from . import b\n", "b.py": "import pkg.c\n", "c.py": "from pkg.a import z\n"},
     "pkg.a, pkg.b, pkg.c"),
])
def test_the_script_finds_a_cycle(tmp_path, files, cycle):
    done = run_script(str(write_package(tmp_path, files)))
    assert done.returncode == 1
    assert f"cycle among {cycle.count(',') + 1} modules: {cycle}" in done.stdout


def test_a_package_importing_its_own_modules_is_no_cycle(tmp_path):
    files = {"__init__.py": "from .a import f\nfrom .b import g\n", "a.py": "from .b import g\n",
             "b.py": "import os\nfrom .sub.c import h\n", "sub/__init__.py": "", "sub/c.py": "from ..errors import E\n",
             "errors.py": ""}
    done = run_script(str(write_package(tmp_path, files)))
    assert done.returncode == 0, done.stdout
    # b imports sub.c, which runs sub/__init__ too: 6 edges; c's own package ran before c (no edge)
    assert "import cycles: 0 (6 modules, 6 imports between them)" in done.stdout


def test_importing_a_module_runs_its_package_init(tmp_path):
    """Issue 26's cycle: results/sets -> notebook -> report (its __init__ runs) -> report/render ->
    results. `from .report.figures import x` never names report/__init__, yet it runs it."""
    files = {"__init__.py": "", "results/__init__.py": "from .sets import Ranking\n",
             "results/sets.py": "from ..notebook import view\n",
             "notebook.py": "from .report.figures import draw\n",
             "report/__init__.py": "from .render import build\n", "report/figures.py": "",
             "report/render.py": "from ..results import Ranking\n"}
    done = run_script(str(write_package(tmp_path, files)))
    assert done.returncode == 1
    assert "cycle among 5 modules: pkg.notebook, pkg.report, pkg.report.render, pkg.results, pkg.results.sets" \
        in done.stdout


def test_results_do_not_import_the_view_layers():
    """Views resolve the result (lesion.results.views' registry), never the other way round."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from import_cycles import import_graph
    finally:
        sys.path.remove(str(SCRIPT.parent))
    graph = import_graph(ROOT / "lesion")
    for module, imported in graph.items():
        if module == "lesion.results" or module.startswith("lesion.results."):
            views = {m for m in imported if m == "lesion.report.notebook" or m.startswith("lesion.report")}
            assert not views, (module, views)


def test_a_notebook_shows_results_through_the_registered_views():
    """In IPython, `import lesion` registers the views; elsewhere nothing of the report loads."""
    code = ("import sys, types; {} import lesion, lesion.results.views as v; "
            "print(sorted(v.HTML_VIEWS), 'lesion.report.render' in sys.modules)")
    plain = subprocess.run([sys.executable, "-c", code.format("")], capture_output=True, text=True, timeout=60)
    assert plain.stdout.split() == ["[]", "False"], plain.stderr
    ipython = code.format("sys.modules['IPython'] = types.ModuleType('IPython');")
    shown = subprocess.run([sys.executable, "-c", ipython], capture_output=True, text=True, timeout=60)
    assert shown.stdout.split() == ["['AnalysisResult',", "'CriticalSet',", "'HardenRecord',", "'Heel',",
                                    "'MechanismReport',", "'Ranking']", "False"], shown.stderr


def test_levels_count_the_longest_chain_and_parts_may_not_import_each_other(tmp_path):
    # a -> sub.c -> errors: modules at levels 3, 2, 1 (sub's __init__ is level 1 too)
    files = {"__init__.py": "", "a.py": "from .sub.c import h\n", "sub/__init__.py": "",
             "sub/c.py": "from ..errors import E\n", "errors.py": ""}
    done = run_script(str(write_package(tmp_path / "one", files)))
    assert done.returncode == 0, done.stdout
    assert "levels: 3 of modules; 3 of parts" in done.stdout
    # no module cycle, but the parts sub and b import each other: the layering is broken
    files = {"__init__.py": "", "b.py": "from .sub.c import h\n", "sub/__init__.py": "", "sub/c.py": "",
             "sub/d.py": "from ..b import x\n"}
    done = run_script(str(write_package(tmp_path / "two", files)))
    assert done.returncode == 1
    assert "parts importing each other: pkg.b, pkg.sub" in done.stdout


def test_the_top_level_holds_at_most_six_files():
    files = sorted(p.name for p in (ROOT / "lesion").glob("*.py"))
    assert len(files) <= 6 and {"__init__.py", "__main__.py", "errors.py", "version.py"} <= set(files), files


def old_paths():
    from lesion._moved import MOVED, SPLIT
    return MOVED, SPLIT


@pytest.mark.parametrize("old", sorted(old_paths()[0]))
def test_an_old_module_path_is_the_new_module_with_a_warning(old):
    """Run in a fresh process: an import already done warns no more."""
    new = old_paths()[0][old]
    code = ("import importlib, warnings; warnings.simplefilter('error'); "
            f"new = importlib.import_module({new!r}); warnings.simplefilter('always'); "
            "import warnings as w\n"
            "with w.catch_warnings(record=True) as caught:\n"
            "    w.simplefilter('always')\n"
            f"    old = importlib.import_module({old!r})\n"
            "print(old is new, [c.category.__name__ for c in caught], str(caught[0].message) if caught else '')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    same, categories, message = done.stdout.split(" ", 2)
    assert (same, categories) == ("True", "['DeprecationWarning']"), done.stdout + done.stderr
    assert new in message


def test_a_split_module_finds_each_old_name_in_its_new_part_with_a_warning():
    import warnings

    from lesion.heel.plan import SearchPlan
    from lesion.model.aliases import resolve
    from lesion.model.loading import load_model
    from lesion.plan.estimate import make_plan
    from lesion.texts.named import named_texts
    from lesion.texts.text import read_text
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import lesion.heel.algorithms as algorithms
        import lesion.loading as loading
        import lesion.passages as passages
        import lesion.plan as plan
        import lesion.texts as texts
        found = (loading.load_model, loading.resolve, algorithms.SearchPlan, plan.make_plan, passages.named_texts,
                 texts.read_text)
    assert found == (load_model, resolve, SearchPlan, make_plan, named_texts, read_text)
    assert caught and all(issubclass(c.category, DeprecationWarning) for c in caught)
    assert any("lesion.model.aliases.resolve" in str(c.message) for c in caught)
    with pytest.raises(AttributeError):
        getattr(loading, "no_such_name")  # noqa: B009


def test_nothing_of_the_project_uses_an_old_module_path():
    """The package, tests, benchmarks, scripts, notebook and docs name modules by their new paths only."""
    import re
    moved, split = old_paths()
    old = sorted({*moved, *(s for s in split if s not in ("lesion.plan", "lesion.mechanism", "lesion.texts"))},
                 key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(o) for o in old) + r")\b(?![./\w])")
    places = [p for sub in ("lesion", "tests", "benchmarks", "scripts", "notebooks", "docs")
              for p in (ROOT / sub).rglob("*") if p.suffix in (".py", ".ipynb", ".md", ".sh")
              and p.name not in ("_moved.py", "test_layout.py", "architecture.md")]
    hits = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in places
            for m in pattern.finditer(p.read_text(encoding="utf-8"))]
    assert hits == []
