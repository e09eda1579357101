"""How the library reports progress: a callable taking one plain-text line (no markup). A line
that must not be missed begins with WARNING; the CLI styles it (cli/render.progress)."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]
WARNING = "WARNING: "


def quiet(_message: str) -> None:
    """The default: say nothing."""
