"""Load an app module from its file and build its Application.

Every actor process loads the app itself, under the same module name, so that
records of the app's own classes unpickle the same way in every process.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from actorflow.api import Application
from actorflow.errors import ApplicationError

_loaded: dict[tuple[str, tuple[str, ...]], Application] = {}


def module_name(path: str) -> str:
    """The name an app module is loaded under: its file name without ``.py``."""
    return os.path.splitext(os.path.basename(path))[0]


def load_module(path: str) -> ModuleType:
    """Import the app module at ``path`` (once per process)."""
    path = os.path.abspath(path)
    name = module_name(path)
    mod = sys.modules.get(name)
    if mod is not None and os.path.abspath(getattr(mod, "__file__", "") or "") == path:
        return mod
    if not os.path.isfile(path):
        msg = f"app module {path!r} does not exist"
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


def load_application(path: str, args: Sequence[str]) -> Application:
    """Import the app and call its ``application_setup(args)`` (cached per process)."""
    key = (os.path.abspath(path), tuple(args))
    if key in _loaded:
        return _loaded[key]
    mod = load_module(path)
    setup = getattr(mod, "application_setup", None)
    if not callable(setup):
        msg = f"app module {path!r} defines no application_setup(args) function"
        raise ApplicationError(msg)
    try:
        app = setup(list(args))
    except ApplicationError:
        raise
    except Exception as exc:
        msg = f"{path}: application_setup(args) raised {type(exc).__name__}: {exc}"
        raise ApplicationError(msg) from exc
    if not isinstance(app, Application):
        msg = (
            f"{path}: application_setup(args) must return build_application(...); "
            f"got {type(app).__name__}"
        )
        raise ApplicationError(msg)
    _loaded[key] = app
    return app
