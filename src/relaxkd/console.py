"""Progress on the console: a tqdm bar on a terminal; off a terminal (logs, CI, pipes), a few plain
lines instead of hundreds of kilobytes of bar redraws."""
from __future__ import annotations

import sys
import time


class _Lines:
    """tqdm's ``update``/context-manager interface, printing ``[relaxkd] desc: n/total (p %)`` at most
    every ``every`` seconds and once at the end."""

    def __init__(self, total: int, desc: str, unit: str, every: float = 60.0):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.n, self.started = 0, time.time()
        self._last = self.started

    def __enter__(self) -> _Lines:
        return self

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.time()
        if now - self._last >= self.every and self.n < self.total:
            self._last = now
            self._say(f"{self.n:,}/{self.total:,} {self.unit}s ({100 * self.n / max(1, self.total):.0f} %)")

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self._say(f"{self.n:,} {self.unit}s in {time.time() - self.started:.1f} s")

    def _say(self, text: str) -> None:
        print(f"[relaxkd] {self.desc}: {text}", file=sys.stderr, flush=True)


class _Off:
    def __enter__(self) -> _Off:
        return self

    def update(self, n: int = 1) -> None:
        pass

    def __exit__(self, *exc) -> None:
        pass


def say(message: str) -> None:
    """One ``[relaxkd] ...`` line on stderr (progress, notes and warnings; stdout carries results)."""
    print(f"[relaxkd] {message}", file=sys.stderr, flush=True)


_said: set[str] = set()


def say_once(message: str) -> None:
    """:func:`say`, but a message already said in this process is not repeated (train and val
    splits, and the datasets rebuilt for counts, report the same finding once)."""
    if message not in _said:
        _said.add(message)
        say(message)


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True):
    """A progress display for ``total`` items: a bar on a terminal, plain lines otherwise."""
    if not enabled:
        return _Off()
    if sys.stderr.isatty():
        from tqdm.auto import tqdm  # noqa: PLC0415 - progress bars only when one is shown

        return tqdm(total=total, desc=desc, unit=unit)
    return _Lines(total, desc, unit)
