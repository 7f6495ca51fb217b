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
    assert "import cycles: 0 (6 modules, 5 imports between them)" in done.stdout
