"""Weight files read one at a time in a fixed order by threads that build their models in between."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class ReadsCancelled(RuntimeError):
    """The load these reads were for failed elsewhere."""


class ReadOrder:
    """Gives each file of `paths` its turn to be read, in that order; a file not listed reads at once.

    One stream in a known order does not depend on how a disk takes concurrent streams (one host lost
    25% of its rate to four) and leaves a known tail: the last file's build. The threads whose files
    are in build their models meanwhile.
    A thread that fails before its read still has to pass its turn on: run the whole load through `run`.
    `cancel` stops every read, waiting or under way, when the load they serve has failed.
    """

    def __init__(self, paths: Iterable[Path] = ()):
        self._waiting = [Path(path) for path in paths]
        self._changed = threading.Condition()
        self._cancelled = False

    @contextmanager
    def turn(self, path: Path) -> Iterator[None]:
        """Wait until the files before `path` are read (or given up), then read it; the turn passes on at exit.
        ReadsCancelled once the reads are cancelled."""
        path = Path(path)
        with self._changed:
            self._changed.wait_for(lambda: self._cancelled or path not in self._waiting or self._waiting[0] == path)
        self.raise_if_cancelled()
        try:
            yield
        finally:
            self.release(path)

    def release(self, path: Path) -> None:
        """Pass `path`'s turn on (it is read, failed, or not needed); releasing twice is harmless."""
        with self._changed:
            if Path(path) in self._waiting:
                self._waiting.remove(Path(path))
                self._changed.notify_all()

    def cancel(self) -> None:
        """Stop the reads: waiting turns and reads under way (at their next chunk) raise ReadsCancelled."""
        with self._changed:
            self._cancelled = True
            self._changed.notify_all()

    def raise_if_cancelled(self) -> None:
        if self._cancelled:
            raise ReadsCancelled("reads cancelled: the load they were for failed")

    def run(self, path: Path, load: Callable[..., T], *args, **kwargs) -> T:
        """load(*args, **kwargs), passing `path`'s turn on however it ends, so that no other file waits forever."""
        try:
            return load(*args, **kwargs)
        finally:
            self.release(path)


UNORDERED = ReadOrder()  # the default: every read goes at once
