"""The progress protocol of the long measuring loops (bench's timings, eval's images).

A progress factory is called as `factory(label, total)` and returns a context manager yielding an
`advance()` callable, called once per finished item. The CLI passes a rich progress bar; library
callers that pass nothing get `no_progress`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

ProgressFactory = Callable[[str, int], "contextlib.AbstractContextManager[Callable[[], None]]"]


@contextlib.contextmanager
def no_progress(_label: str, _total: int) -> Iterator[Callable[[], None]]:
    """A progress factory that shows nothing."""
    yield lambda: None
