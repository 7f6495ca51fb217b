"""Docstring cross-references (:func:`...` and the like) name something that exists: the mkdocs hook
(.mkdocs/roles.py) resolves each against the package and fails the build on one that does not."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def hook():
    spec = importlib.util.spec_from_file_location("lesion_docs_roles", ROOT / ".mkdocs" / "roles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_role_resolves_only_to_a_name_that_exists_at_its_new_path():
    roles = hook()
    assert roles.exists("lesion.runtime.anytime.Anytime")
    assert roles.exists("lesion.runtime.anytime.Anytime.stopped")  # set on self
    assert not roles.exists("lesion.runtime.anytime.NoSuchThing")
    assert not roles.exists("lesion.anytime.Anytime")  # lesion 0.1's old path: still imports, but stale
    assert any(roles.exists(c) for c in roles.candidates(".anytime", "lesion.runtime", []))
    assert not any(roles.exists(c) for c in roles.candidates(".no_such_module", "lesion.runtime", []))


def test_every_docstring_role_in_the_package_names_something():
    assert hook().unresolved(ROOT / "lesion") == []
