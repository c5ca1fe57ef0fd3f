"""The ``relaxkd`` command line: runs a subcommand of commands.py with honest exit codes, signals
and one-line errors."""
from __future__ import annotations

import os
import signal
import sys
import threading


def _startup_stop(signum, frame):  # pragma: no cover - exercised by subprocess tests
    """Before ``main()`` takes over (imports): nothing is written yet, so stop at once with the line."""
    sys.stderr.write(_STOP_LINES.get(signum, _STOP_LINES[signal.SIGINT]) + "\n")
    sys.stderr.flush()
    os._exit(128 + signum)


_STOP_LINES = {
    signal.SIGINT: "interrupted: completed artifacts are kept; rerun the same command to resume",
    signal.SIGTERM: "terminated (SIGTERM): completed artifacts are kept; rerun the same command to resume",
}
# Only in the `relaxkd` process itself (console script or `python -m relaxkd`), not when a program
# imports this module: Ctrl-C while the heavy imports below run is already the documented line.
if threading.current_thread() is threading.main_thread() and (
    os.path.basename(sys.argv[0] if sys.argv else "") == "relaxkd" or sys.argv[:1] == ["-m"]
    or (sys.argv and sys.argv[0].endswith(os.path.join("relaxkd", "__main__.py")))
):
    for _signum in _STOP_LINES:
        if signal.getsignal(_signum) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(_signum, _startup_stop)
import click
import typer

from relaxkd.errors import Interrupted, UserError
from relaxkd.versions import untested

if untested("typer"):  # its private click copy is imported next: one line, not a traceback
    sys.exit(f"error: {untested('typer')}")
import typer._click.exceptions as typer_click  # noqa: E402

from relaxkd.commands import app  # noqa: E402


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    # errors re-raised from DataLoader workers carry the original message on their last line
    return text[-1] if text else type(exc).__name__


#: Typer >= 0.20 vendors its own copy of click: catch both, or usage errors escape as tracebacks.
_CLICK_ERRORS = (typer_click.ClickException, click.exceptions.ClickException)
_NO_ARGS_HELP = (typer_click.NoArgsIsHelpError, getattr(click.exceptions, "NoArgsIsHelpError", typer_click.NoArgsIsHelpError))
_ABORTS = (typer.Abort, click.exceptions.Abort)
_WORKER_MARK = "UserError: "


def _find_user_error(exc: BaseException) -> UserError | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        # A DataLoader worker re-raises "Caught UserError in DataLoader worker ... Original Traceback
        # ... relaxkd.errors.UserError: <message>", as a UserError when it can rebuild the type: keep
        # only the original message.
        if "Original Traceback" in text and _WORKER_MARK in text:
            return UserError(text.rsplit(_WORKER_MARK, 1)[1])
        if isinstance(exc, UserError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _disk_full_error(exc: BaseException) -> UserError | None:
    """A full disk outside the artifact store (which says which artifact itself): export, report."""
    from relaxkd.artifacts import disk_full

    if not disk_full(exc):
        return None
    filename = getattr(exc, "filename", None)
    where = f" while writing {filename}" if filename else ""
    return UserError(f"no space left on device{where}; free space or write to another disk "
                     f"(completed artifacts are kept, files already written are whole)")


def _usage_message(exc: BaseException) -> str:
    message = " ".join(exc.format_message().split()).replace("Value error, ", "")
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message += f" (see `{ctx.command_path} --help`)"
    return message


class _Signals:
    """SIGINT/SIGTERM during a command: the first raises :class:`Interrupted` where the main thread is
    (stages unwind, the artifact store drops its temporary directory, Lightning tears down); a
    second one while that cleanup runs stops the process at once. Forked DataLoader workers get the
    default behaviour (their parent reports)."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def handle(self, signum, frame) -> None:
        if os.getpid() != self.owner:  # a forked worker: what it would do without us
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self.received is not None:
            _startup_stop(self.received, frame)
        self.received = signum
        raise Interrupted(signum)

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for signum in _STOP_LINES:
                self.previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self.handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _interrupted(signum: int = signal.SIGINT) -> None:
    typer.echo(_STOP_LINES.get(signum, _STOP_LINES[signal.SIGINT]), err=True)
    sys.exit(128 + signum)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with _Signals() as signals:
        try:
            _main()
        except SystemExit as exc:
            # Lightning answers SIGTERM with a bare SystemExit and Ctrl-C with sys.exit(1): a signal
            # received during the command decides the exit code, whatever exception carried it out
            if signals.received is not None and exc.code not in (128 + signals.received,):
                _interrupted(signals.received)
            raise
        except Interrupted as exc:
            _interrupted(exc.signum)
        except BaseException:
            if signals.received is not None:
                _interrupted(signals.received)
            raise
        if signals.received is not None:  # swallowed on the way (e.g. by a library): still stop honestly
            _interrupted(signals.received)


def _main() -> None:
    try:
        # typer turns a KeyboardInterrupt inside a command into an exit code it returns
        code = app(standalone_mode=False, prog_name="relaxkd")  # also under `python -m relaxkd`
    except _ABORTS:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except _NO_ARGS_HELP as exc:  # `relaxkd` or `relaxkd embed` alone: the help, exit 2 as click does
        if exc.format_message().strip():  # with rich installed, typer has printed it already
            typer.echo(exc.format_message(), err=True)
        sys.exit(2)
    except _CLICK_ERRORS as exc:
        typer.echo(f"error: {_usage_message(exc)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()
    except Interrupted:
        raise
    except Exception as exc:  # noqa: BLE001 - user errors become one line, bugs keep their traceback
        user_error = _find_user_error(exc) or _disk_full_error(exc)
        if user_error is None:
            raise
        typer.echo(f"error: {_one_line(user_error)}", err=True)
        sys.exit(UserError.exit_code)
    if code == 130:
        _interrupted()
    if isinstance(code, int) and code != 0:
        sys.exit(code)


if __name__ == "__main__":
    main()
