"""User-facing errors.

A :class:`UserError` is a problem with the user's input (a path, a name, a config value). The CLI
prints its message as one line, exits with code 2 and shows no traceback. Everything else is a bug
and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input: the message says what is wrong and what to do, on one line."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class Interrupted(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM (``timeout``, ``docker stop``, a scheduler) received by the CLI.

    A ``BaseException`` like ``KeyboardInterrupt``, so no ``except Exception`` swallows it, but not a
    ``KeyboardInterrupt``: Lightning turns that into ``sys.exit(1)``. The artifact store removes the
    temporary directory it unwinds through; committed artifacts and checkpoints stay. ``relaxkd.cli``
    exits with ``128 + signum`` (130, 143) after one line.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)
