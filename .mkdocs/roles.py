"""mkdocs hook: lesion's docstrings cross-reference in Sphinx's style (:func:`name`); mkdocstrings
renders the role as text before the code span, so the API page drops it and keeps the name. Nothing
else resolves those names, so before the build each role's target is resolved against the package
(imported, then looked up attribute by attribute) and the build fails on one that names nothing: a
docstring naming a function that moved would otherwise go stale unseen."""
import ast
import importlib
import inspect
import re
import sys
import warnings
from pathlib import Path

ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc):(<code>)~?")
ROLE_IN_SOURCE = re.compile(r":(?:func|class|mod|meth|attr|data|exc):`~?([^`<>]+?)`")
ROOT = Path(__file__).resolve().parent.parent


def on_page_content(html, **kwargs):
    return ROLE.sub(r"\1", html)


def on_pre_build(config, **kwargs):
    stale = unresolved(ROOT / "lesion")
    if stale:
        from mkdocs.exceptions import PluginError
        raise PluginError("docstring cross-references that name nothing: "
                          + "; ".join(f"{file}: {target}" for file, target in stale))


def exists(dotted: str) -> bool:
    """Whether ``dotted`` names a module or an object in one (the longest importable prefix, then
    attributes; a dataclass field or an annotated attribute of a class counts). A name reached only
    through one of lesion 0.1's old paths (lesion._moved: they warn) is stale."""
    from lesion._moved import _PACKAGES, MOVED, SPLIT
    old_modules = {*MOVED, *SPLIT} - _PACKAGES  # a package that took an old module's name is new
    if any(dotted == old or dotted.startswith(old + ".") for old in old_modules):
        return False
    parts = dotted.split(".")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = _look_up(parts)
    return found and not any("is deprecated: use" in str(w.message) for w in caught)


def _look_up(parts: list[str]) -> bool:
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if hasattr(obj, name):
                obj = getattr(obj, name)
            elif isinstance(obj, type) and _instance_attribute(obj, name):
                obj = None  # an instance attribute: nothing further to look up on it
            else:
                return False
        return True
    return False


def _instance_attribute(cls: type, name: str) -> bool:
    """Whether instances of ``cls`` carry ``name``: annotated on the class (a dataclass field) or set
    on ``self`` in its code."""
    if any(name in vars(k).get("__annotations__", {}) for k in cls.__mro__):
        return True
    try:
        return re.search(rf"\bself\.{re.escape(name)}\s*(?::[^=]+)?=", inspect.getsource(cls)) is not None
    except (OSError, TypeError):
        return False


def candidates(target: str, module: str, scope: list[str]) -> list[str]:
    """Where a role's ``target`` may live, as Sphinx looks: a leading dot means relative to the
    docstring's module (or its packages above), a bare name may be in the enclosing class, the
    module, a package above it, or be absolute."""
    target = target.strip().removesuffix("()")
    packages = module.split(".")
    above = [".".join(packages[:i]) for i in range(len(packages), 0, -1)]
    bare = target.lstrip(".")
    found = [f"{module}.{'.'.join(scope[:i])}.{bare}" for i in range(len(scope), 0, -1)]
    found += [f"{p}.{bare}" for p in above]
    if not target.startswith("."):
        found.append(target)
    return found


def docstrings(tree: ast.Module):
    """Each docstring in a module with the classes around it."""
    def walk(node, scope):
        doc = ast.get_docstring(node, clean=False) if isinstance(
            node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) else None
        if doc:
            yield doc, scope
        for child in ast.iter_child_nodes(node):
            inner = scope + [child.name] if isinstance(child, ast.ClassDef) else scope
            yield from walk(child, inner)
    yield from walk(tree, [])


def unresolved(package: Path) -> list[tuple[str, str]]:
    """(file, target) for each role in the package's docstrings whose target names nothing."""
    sys.path.insert(0, str(package.parent))
    stale = []
    for file in sorted(package.rglob("*.py")):
        relative = file.relative_to(package.parent)
        module = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
        for doc, scope in docstrings(ast.parse(file.read_text())):
            for target in ROLE_IN_SOURCE.findall(doc):
                if not any(exists(c) for c in candidates(target, module, scope)):
                    stale.append((str(relative), target))
    return stale


if __name__ == "__main__":
    for file, target in unresolved(ROOT / "lesion"):
        print(f"{file}: {target}")
