"""Running `relaxkd` in tests and asserting what a user sees on bad input (docs/errors.md).

One assertion for every catalogue entry, `assert_user_error`: exit code 2, no traceback, the last
stderr line is the one-line `error: ...` message (stage progress lines may precede it), and the
committed artifacts of a run directory are byte-for-byte intact with no temporary directory left.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from relaxkd import cli

#: stage runs print progress before failing: `[relaxkd] stage: computing -> ...` and tqdm bars
PROGRESS_LINE = re.compile(r"^(\[relaxkd\] |.*: +\d+%\|)")
ENTRY_POINT = Path(sys.executable).with_name("relaxkd")


@dataclass
class Result:
    code: int
    out: str
    err: str


def relaxkd(capsys, monkeypatch, *args: str) -> Result:
    """Run `relaxkd ARGS` in this process through the console script's `main()`."""
    capsys.readouterr()  # drop anything printed before
    monkeypatch.setattr(sys, "argv", ["relaxkd", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def relaxkd_subprocess(*args: str, cwd: Path) -> Result:
    proc = subprocess.run([str(ENTRY_POINT), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def committed_files(root: Path) -> dict[str, str]:
    """SHA-256 of every file of every committed artifact under ``root`` (run dirs and cache)."""
    files = {}
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if path.is_file() and not any(part.startswith(".") for part in parts):  # not .work, .tmp-*, .lock
            files[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


@dataclass
class RunSnapshot:
    """The committed artifacts under a run root before a bad command; `check` after it."""

    root: Path
    files: dict[str, str]

    @classmethod
    def of(cls, root: Path) -> RunSnapshot:
        return cls(root, committed_files(root))

    def check(self) -> None:
        after = committed_files(self.root)
        changed = [name for name, digest in self.files.items() if after.get(name) != digest]
        assert not changed, f"committed artifact files changed or vanished: {changed}"
        leftovers = [str(p) for p in self.root.rglob(".tmp-*")]
        assert not leftovers, f"temporary directories left behind: {leftovers}"

    def unchanged(self) -> bool:
        """Nothing committed, changed or removed since the snapshot."""
        return committed_files(self.root) == self.files


def assert_user_error(
    result: Result, *fragments: str, intact: RunSnapshot | None = None, after_progress: bool = False
) -> str:
    """Assert exit 2, no traceback and exactly one stderr line, `error: ...`, holding every fragment.

    With ``after_progress`` (a stage that started work), progress lines may precede the error line;
    with ``intact``, the run's committed artifacts must be unchanged. Returns the message.
    """
    assert result.code == 2, result
    assert "Traceback" not in result.err and "Traceback" not in result.out, result.err
    lines = [line for line in re.split(r"[\r\n]", result.err) if line.strip()]
    assert lines, "nothing on stderr"
    message = lines[-1]
    assert message.startswith("error: "), result.err
    others = lines[:-1]
    if after_progress:
        others = [line for line in others if not PROGRESS_LINE.match(line)]
    assert others == [], f"stderr has more than the error line: {others}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    if intact is not None:
        intact.check()
    return message
