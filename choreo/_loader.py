"""Loading choreographies from files and from source text (CLI, tests, docs)."""

from __future__ import annotations

import hashlib
import importlib.util
import linecache
import sys
import types
from pathlib import Path

from choreo._dsl import Choreography
from choreo._errors import UsageError

__all__ = ["choreographies_in", "load_file", "load_target", "module_from_source"]


def module_from_source(source: str, name: str = "choreo_snippet") -> types.ModuleType:
    """Execute ``source`` as a new module whose code choreo can read back.

    The text is registered with ``linecache`` under a unique pseudo file name,
    so choreographies defined in it can be checked, projected and run.

    Args:
        source: the module's Python source.
        name: the prefix of the module's name and pseudo file name.

    Returns:
        The executed module, also registered in ``sys.modules``.
    """
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    filename = f"<{name}-{digest}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    mod = types.ModuleType(f"{name}_{digest}")
    mod.__file__ = filename
    sys.modules[mod.__name__] = mod
    exec(compile(source, filename, "exec"), mod.__dict__)  # the caller's own source text
    return mod


def load_file(path: str | Path) -> types.ModuleType:
    """Import a Python file as a module (its directory goes on ``sys.path``).

    Raises:
        UsageError: the file does not exist or fails to import.
    """
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{path}: no such file")
    p = p.resolve()
    parent = str(p.parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)
    # a file inside a package directory (protocols/x.py) is imported as that package's module
    name = p.stem
    pkg = p.parent
    if (pkg / "__init__.py").exists():
        name = f"{pkg.name}.{p.stem}"
        if str(pkg.parent) not in sys.path:
            sys.path.insert(0, str(pkg.parent))
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(p):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path}: cannot be imported as a Python module")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except SyntaxError as exc:
        raise UsageError(
            f"{exc.filename}:{exc.lineno}:{(exc.offset or 0)}: error: {exc.msg}"
        ) from None
    except Exception as exc:
        sys.modules.pop(name, None)
        raise UsageError(f"{path}: importing it raised {type(exc).__name__}: {exc}") from exc
    return mod


def choreographies_in(mod: types.ModuleType) -> dict[str, Choreography]:
    """Every choreography defined in ``mod`` (not imported into it), in file order."""
    found = {
        k: v
        for k, v in vars(mod).items()
        if isinstance(v, Choreography) and v.file == getattr(mod, "__file__", None)
    }
    return dict(sorted(found.items(), key=lambda kv: kv[1]._line))


def load_target(target: str) -> Choreography:
    """``FILE:CHOR`` (or ``FILE`` with exactly one choreography) -> the choreography.

    Raises:
        UsageError: the file or the choreography cannot be found.
    """
    path, _, name = target.partition(":")
    mod = load_file(path)
    found = choreographies_in(mod)
    if not name:
        if len(found) != 1:
            raise UsageError(
                f"{path} defines {len(found)} choreographies ({', '.join(found) or 'none'}); "
                f"name one as {path}:NAME"
            )
        return next(iter(found.values()))
    chor = getattr(mod, name, None)
    if not isinstance(chor, Choreography):
        raise UsageError(
            f"{path} has no choreography {name!r}; it defines: {', '.join(found) or 'none'}"
        )
    return chor
