"""Content-addressed artifact store.

Each stage writes one directory ``<root>/<stage>-<key>`` where ``key`` hashes everything that
determines the result (config subset, input artifact keys, code-relevant versions). A directory is
built under a temporary name and renamed into place only after its ``manifest.json`` (with the
SHA-256 of every file) is written, so a killed run never leaves a directory that looks complete.
A directory whose files no longer match its manifest is treated as absent and rebuilt. The temporary
name records the host and process that build it, so a later build of the same artifact removes the
leftovers of a killed process (never those of a live one).

Training stages keep resumable state (Lightning checkpoints) in ``<root>/.work/<stage>-<key>``,
which survives a kill and is deleted once the artifact is committed.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from relaxkd.buildlock import BuildLock, pid_alive
from relaxkd.errors import UserError

MANIFEST = "manifest.json"
#: the manifest's own SHA-256 (of everything else in it): an edited manifest is detected
MANIFEST_DIGEST = "manifest_sha256"
#: bump when a stage's output format or semantics change, so stale artifacts are rebuilt.
FORMAT_VERSION = 1


def stable_hash(data: Any) -> str:
    """Hash of JSON-able data, independent of key order (artifact keys, config hashes)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def manifest_digest(manifest: dict[str, Any]) -> str:
    return stable_hash({k: v for k, v in manifest.items() if k != MANIFEST_DIGEST})


def make_dir(path: Path, setting: str) -> None:
    """``mkdir -p`` whose failures (a file in the way, no permission, read-only disk) are one line."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"cannot create folder {path}: a file is in the way; set {setting} to a folder") from None
    except OSError as exc:
        if disk_full(exc):
            raise
        raise UserError(f"cannot create folder {path}: {exc.strerror or exc}; set {setting} to a writable folder") from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("relaxkd", "torch", "torchvision", "open_clip_torch", "lightning", "faiss-cpu", "nltk"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclass(frozen=True)
class Artifact:
    stage: str
    key: str
    path: Path
    manifest: dict[str, Any]

    def file(self, name: str) -> Path:
        """A file of this artifact; one its manifest does not list is never read."""
        files = self.manifest.get("files")
        if isinstance(files, dict) and files and name not in files:
            raise UserError(
                f"artifact {self.path} has no file {name!r} in its manifest (written by another relaxkd version, "
                f"or edited); delete {self.path} and rerun to rebuild it"
            )
        return self.path / name

    def read_json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text())


class ArtifactStore:
    def __init__(self, root: str | Path, setting: str = "run_root"):
        self.root = Path(root)
        self.setting = setting  # the config key that moves this store elsewhere (named in errors)

    def _tmp_prefix(self, stage: str, key: str) -> str:
        return f".tmp-{stage}-{key}-"

    def _remove_stale_tmp(self, stage: str, key: str) -> None:
        """Delete temporary directories of this artifact left by killed processes on this host."""
        prefix = self._tmp_prefix(stage, key)
        for path in self.root.glob(f"{prefix}*"):
            host, _, rest = path.name[len(prefix):].partition("-")
            pid = rest.partition("-")[0]
            if host == _HOST and pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)

    def key(self, stage: str, spec: dict[str, Any]) -> str:
        return stable_hash({"stage": stage, "format": FORMAT_VERSION, "spec": spec})[:16]

    def path(self, stage: str, key: str) -> Path:
        return self.root / f"{stage}-{key}"

    def work_dir(self, stage: str, key: str) -> Path:
        """Resumable scratch space for a stage (checkpoints); kept across kills."""
        path = self.root / ".work" / f"{stage}-{key}"
        make_dir(path, self.setting)
        return path

    def build_lock(self, stage: str, key: str, on_wait: Any = None) -> BuildLock:
        """The lock one builder of ``<stage>-<key>`` holds, across processes and hosts sharing this store."""
        make_dir(self.root, self.setting)
        return BuildLock(self.root / ".locks" / f"{stage}-{key}.lock", on_wait)

    def lookup(self, stage: str, spec: dict[str, Any], verify: bool = True) -> Artifact | None:
        key = self.key(stage, spec)
        path = self.path(stage, key)
        manifest = self._valid_manifest(path, verify)
        if manifest is None:
            if path.exists():
                # corrupt or partial: move aside rather than trust it
                shutil.move(str(path), str(self.root / f".corrupt-{path.name}-{uuid.uuid4().hex[:6]}"))
            return None
        return Artifact(stage, key, path, manifest)

    def _valid_manifest(self, path: Path, verify: bool) -> dict[str, Any] | None:
        return self.check(path, verify)[0]

    def check(self, path: Path, verify: bool = True) -> tuple[dict[str, Any] | None, str]:
        """``(manifest, "")`` for a whole artifact directory, else ``(None, what is wrong)``.

        Whole means: the manifest is intact (its own digest matches, so an edit is detected), it lists
        at least one file, the directory holds exactly the files it lists, and (``verify``) every file
        has the SHA-256 the manifest records.
        """
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError):
            return None, f"{MANIFEST} is missing or unreadable"
        if not isinstance(manifest, dict) or manifest.get(MANIFEST_DIGEST) != manifest_digest(manifest):
            return None, f"{MANIFEST} was changed after it was written"
        files = manifest.get("files")
        if not isinstance(files, dict) or not files:
            return None, f"{MANIFEST} lists no files"
        present = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.name != MANIFEST}
        if present != set(files):
            missing, extra = sorted(set(files) - present), sorted(present - set(files))
            return None, (f"{missing[0]} is missing" if missing else f"{extra[0]} is not in its manifest")
        if verify:
            for name, digest in files.items():
                if file_sha256(path / name) != digest:
                    return None, f"{name} does not match its manifest (changed after it was written)"
        return manifest, ""

    @contextlib.contextmanager
    def create(
        self, stage: str, spec: dict[str, Any], extra: dict[str, Any] | None = None
    ) -> Iterator[Path]:
        """Yield a temporary directory; on success commit it atomically with a manifest."""
        key = self.key(stage, spec)
        final = self.path(stage, key)
        make_dir(self.root, self.setting)
        self._remove_stale_tmp(stage, key)
        tmp = self.root / f"{self._tmp_prefix(stage, key)}{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            yield tmp
            files = {
                str(p.relative_to(tmp)): file_sha256(p)
                for p in sorted(tmp.rglob("*"))
                if p.is_file()
            }
            manifest = {
                "stage": stage,
                "key": key,
                "format": FORMAT_VERSION,
                "spec": spec,
                "files": files,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "versions": package_versions(),
                "git_commit": git_commit(),
                "command": " ".join(sys.argv),
                **(extra or {}),
            }
            manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
            _write_json_atomic(tmp / MANIFEST, manifest)
            self._commit(tmp, final)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if disk_full(exc):  # also while training: checkpoints go to .work on the same disk
                raise UserError(
                    f"no space left on device while writing {stage} artifact to {final}; "
                    f"free space or set {self.setting} to another disk (completed artifacts are kept)"
                ) from exc
            raise
        shutil.rmtree(self.root / ".work" / f"{stage}-{key}", ignore_errors=True)

    def _commit(self, tmp: Path, final: Path) -> None:
        """Rename ``tmp`` into place. Another process sharing this store (e.g. a cache root) may
        have committed the same key meanwhile: same inputs, same content, so keep theirs."""
        if final.exists() and self._valid_manifest(final, verify=False) is None:
            shutil.move(str(final), str(self.root / f".corrupt-{final.name}-{uuid.uuid4().hex[:6]}"))
        try:
            os.replace(tmp, final)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or self._valid_manifest(final, verify=False) is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)

    def artifacts(
        self, stage: str | None = None, verify: bool = False, damaged: list[tuple[Path, str]] | None = None
    ) -> list[Artifact]:
        """The whole artifacts of the store (of ``stage``). Readers (report, export) pass ``verify``:
        every file is checked against its manifest; what fails is left out and, with ``damaged``,
        listed there as ``(path, reason)``."""
        found = []
        if not self.root.is_dir():
            return found
        for path in sorted(self.root.iterdir()):
            if path.name.startswith(".") or not path.is_dir():
                continue
            if stage is not None and not path.name.startswith(f"{stage}-"):
                continue
            manifest, reason = self.check(path, verify)
            if manifest is None:
                if damaged is not None and (path / MANIFEST).exists():
                    damaged.append((path, reason))
                continue
            if stage is not None and manifest.get("stage") != stage:
                continue
            found.append(Artifact(manifest["stage"], manifest["key"], path, manifest))
        return found


#: what a full disk or an exhausted quota looks like, raised directly (OSError) or wrapped in the
#: message of a writer library (safetensors: "No space left on device (os error 28)")
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded", f"os error {errno.ENOSPC}", f"os error {errno.EDQUOT}")


def disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception it was raised from means the disk (or quota) is full."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return True
        if not isinstance(exc, UserError) and any(text in str(exc) for text in _DISK_FULL_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


#: the host in temporary names: a hash, since host names may hold '-' and shared file systems span hosts
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; renamed onto ``path`` only when the block succeeds
    (else removed), so a reader never sees a half-written file and an old one survives a failure."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in _DISK_FULL_ERRNOS:  # name the file being written, not its temporary
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _write_json_atomic(path: Path, data: Any) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))


def write_json(path: Path, data: Any) -> None:
    _write_json_atomic(Path(path), data)


@contextlib.contextmanager
def run_lock(root: str | Path, wait: bool = True, setting: str = "run_root") -> Iterator[None]:
    """Exclusive lock on a run directory so two processes never write it at once."""
    root = Path(root)
    make_dir(root, setting)
    try:
        fh = open(root / ".lock", "w")
    except OSError as exc:
        raise UserError(
            f"cannot write in run directory {root}: {exc.strerror or exc}; set {setting} to a writable folder"
        ) from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise UserError(f"run directory {str(root)!r} is busy: another relaxkd process is using it") from None
            print(f"waiting for another relaxkd process using {root} ...", file=sys.stderr)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
