"""Load an app, from its file or by its module name, and build its Application.

``--app`` names the app either way: a path such as ``apps/alphabet.py`` (loaded under its
file name without ``.py``, here ``alphabet``) or a dotted module name such as
``actorflow.examples.alphabet`` or ``mypkg.myapp`` (imported from ``sys.path``, or the
current directory as ``python -m`` would, and loaded under that name). The value reaches
every actor process as the same string and every process loads the app itself, so each
loads it under the same module name and records of the app's own classes unpickle the
same way in every process.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from actorflow.api import Application
from actorflow.errors import ApplicationError

Codec = tuple  # (serialize(obj) -> bytes, deserialize(bytes) -> obj)

_loaded: dict[tuple[str, tuple[str, ...]], Application] = {}


@dataclass(frozen=True)
class AppRef:
    """What an ``--app`` value names: a file (absolute path) or a module (dotted name)."""

    kind: Literal["file", "module"]
    target: str
    given: str  # the value as the user wrote it, for messages


def is_module_name(text: str) -> bool:
    """True for a dotted Python name (``pkg.app``); ``something.py`` is taken as a file."""
    parts = text.split(".")
    return not text.endswith(".py") and all(part.isidentifier() for part in parts)


def resolve(value: str) -> AppRef:
    """Whether ``value`` is a file or a module: an existing file wins, then a module name.

    The worker's flag parser makes ``--app`` absolute (``os.path.abspath``), so a module
    name can arrive as ``<cwd>/<name>``: an absolute path that is not a file and whose last
    part is a module name is taken as that module name (a package's folder, too).
    """
    if os.path.isfile(value):
        return AppRef("file", os.path.abspath(value), value)
    if is_module_name(value):
        return AppRef("module", value, value)
    base = os.path.basename(value)
    if os.path.isabs(value) and is_module_name(base):
        return AppRef("module", base, base)
    return AppRef("file", os.path.abspath(value), value)


def app_reference(value: str) -> str:
    """The form of ``value`` to hand to every process: an absolute path or a module name."""
    return resolve(value).target


def module_name(path_or_module: str) -> str:
    """The name an app is loaded under: a file's name without ``.py``, or the module's name."""
    ref = resolve(path_or_module)
    if ref.kind == "module":
        return ref.target
    return os.path.splitext(os.path.basename(ref.target))[0]


def load_module(path_or_module: str) -> ModuleType:
    """Import the app's module from its file or by its name (once per process)."""
    ref = resolve(path_or_module)
    if ref.kind == "module":
        return _import_by_name(ref)
    return _import_file(ref)


def _import_by_name(ref: AppRef) -> ModuleType:
    name = ref.target
    mod = sys.modules.get(name)
    if mod is not None:
        return mod
    # `actorflow worker` is a console script: unlike `python -m`, it does not put the
    # current directory on sys.path. Appended, it can never shadow an installed module.
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            msg = (
                f"app {ref.given!r} is neither an existing file nor an importable module "
                f"(no module named {missing!r} on sys.path or in {cwd})"
            )
            raise ApplicationError(msg) from None
        msg = f"app module {name!r} failed to import: {type(exc).__name__}: {exc}"
        raise ApplicationError(msg) from exc
    except ApplicationError:
        raise
    except Exception as exc:
        msg = f"app module {name!r} failed to import: {type(exc).__name__}: {exc}"
        raise ApplicationError(msg) from exc


def _import_file(ref: AppRef) -> ModuleType:
    path = ref.target
    name = module_name(path)
    mod = sys.modules.get(name)
    if mod is not None and os.path.abspath(getattr(mod, "__file__", "") or "") == path:
        return mod
    if not os.path.isfile(path):
        if path.endswith(".py"):
            msg = f"app module {path!r} does not exist"
        else:
            msg = f"app {ref.given!r} is neither an existing file nor an importable module"
        raise ApplicationError(msg)
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        msg = f"app module {path!r} cannot be imported (is it a .py file?)"
        raise ApplicationError(msg)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except ApplicationError:
        del sys.modules[name]
        raise
    except Exception as exc:
        del sys.modules[name]
        msg = f"app module {path!r} failed to import: {type(exc).__name__}: {exc}"
        raise ApplicationError(msg) from exc
    return mod


def load_application(path_or_module: str, args: Sequence[str]) -> Application:
    """Import the app (a file's path or a module's name) and call its
    ``application_setup(args)`` (cached per process)."""
    ref = resolve(path_or_module)
    key = (ref.target, tuple(args))
    set_args(args)
    if key in _loaded:
        return _loaded[key]
    mod = load_module(path_or_module)
    return setup_application(mod, args, ref.target, key)


def set_args(args: Sequence[str]) -> None:
    """Set ``actorflow._ARGS`` (Wallaroo's ``wallaroo._ARGS``): the worker's command line
    as the app sees it. The initializer's flag is there under Wallaroo's spelling too, so a
    check such as ``"--cluster-initializer" in wallaroo._ARGS`` works unchanged."""
    import actorflow

    seen = tuple(args)
    if "--topology-initializer" in seen and "--cluster-initializer" not in seen:
        seen += ("--cluster-initializer",)
    actorflow._ARGS = seen


def app_codec(path_or_module: str) -> Codec | None:
    """The app module's own ``serialize(obj)`` / ``deserialize(bytes)``, when it defines
    both: records then travel between actors as the bytes these make."""
    return module_codec(load_module(path_or_module))


def module_codec(mod: ModuleType) -> Codec | None:
    ser, deser = getattr(mod, "serialize", None), getattr(mod, "deserialize", None)
    if callable(ser) and callable(deser):
        return (ser, deser)
    return None


def setup_application(
    mod: ModuleType, args: Sequence[str], shown: str, key: tuple | None = None
) -> Application:
    """Call ``mod.application_setup(args)`` and check what it returns (cached by ``key``)."""
    set_args(args)
    setup = getattr(mod, "application_setup", None)
    if not callable(setup):
        msg = f"app module {shown!r} defines no application_setup(args) function"
        raise ApplicationError(msg)
    try:
        app = setup(list(args))
    except ApplicationError:
        raise
    except Exception as exc:
        msg = f"{shown}: application_setup(args) raised {type(exc).__name__}: {exc}"
        raise ApplicationError(msg) from exc
    if not isinstance(app, Application):
        msg = (
            f"{shown}: application_setup(args) must return build_application(...); "
            f"got {type(app).__name__}"
        )
        raise ApplicationError(msg)
    if key is not None:
        _loaded[key] = app
    return app
