"""The example apps, shipped inside the package so that an installed actorflow has them.

Each example is a module here with its config file beside it (``alphabet.py`` and
``alphabet.conf``), run by module name from any directory::

    actorflow worker --app actorflow.examples.alphabet -c "$(actorflow examples --conf alphabet)"

In a source checkout ``apps/*.py`` and ``conf/*.conf`` are links to these same files, so
what people read there is what ships.
"""

from __future__ import annotations

from pathlib import Path

NAMES = (
    "alphabet",
    "word_count",
    "vote_merge",
    "alerts_windowed",
    "window_detector",
    "sequence_detector",
)


def module_name(name: str) -> str:
    """The dotted module name of example ``name``, as ``--app`` takes it."""
    _check(name)
    return f"{__name__}.{name}"


def conf_path(name: str) -> Path:
    """The config file of example ``name``: a real file inside the installed package."""
    _check(name)
    return Path(__file__).parent / f"{name}.conf"


def _check(name: str) -> None:
    if name not in NAMES:
        msg = f"no example named {name!r}; the examples are {', '.join(NAMES)}"
        raise ValueError(msg)
