"""SIGINT and SIGTERM as exceptions, from the first instruction of a run to the last (README "Safety").

`install()` makes both signals raise `Stopped` (a KeyboardInterrupt carrying the signal), so a Ctrl-C or a
`kill` unwinds through every `with` block: the lock is released, a child process is ended, and the command
prints one line and exits 128 + the signal number (130, 143). It is installed by `mbpatch`'s entry point
before anything else is imported. SIGINT is handled even when the shell started mbpatch with it ignored
(a background job of a script): mbpatch's own handling is what makes the run stop cleanly, never half-way.

`held()` holds both signals for a few instructions that must not be split (taking or dropping the lock);
the caller decides what to do with what arrived (`.got`). This module imports nothing of mbpatch.
"""

from __future__ import annotations

import signal
import threading
from typing import Dict, List

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """SIGINT / SIGTERM received outside a write phase."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


def _raise(signum, frame) -> None:
    raise Stopped(signum)


def install() -> None:
    for sig in SIGNALS:
        signal.signal(sig, _raise)


class held:  # noqa: N801 (used as a context manager)
    """Hold SIGINT and SIGTERM for the block; `.got` lists what arrived. Only the main thread can."""

    def __enter__(self):
        self.got: List[int] = []
        self.old: Dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self.old[sig] = signal.signal(sig, lambda n, f: self.got.append(n))
        return self

    def __exit__(self, *exc):
        for sig, handler in self.old.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        return False

    def reraise(self) -> None:
        """Raise what arrived during the block as it would have been raised (Stopped, or KeyboardInterrupt
        for a SIGINT under Python's default handler); the default SIGTERM action is re-delivered."""
        if not self.got:
            return
        signum = self.got[0]
        handler = self.old.get(signum)
        if handler is _raise:
            raise Stopped(signum)
        if signum == signal.SIGINT and handler is signal.default_int_handler:
            raise KeyboardInterrupt
        if handler not in (signal.SIG_IGN, None) and callable(handler):
            handler(signum, None)
        elif handler == signal.SIG_DFL:
            signal.raise_signal(signum)
