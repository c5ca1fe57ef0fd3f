"""The files a dataset reads: a scan that refuses escaping or looping symlinks, and a fingerprint.

``scan_images`` lists ``directory/**/<image>`` like torchvision's ``make_dataset`` (same order), but
follows a symbolic link only when it stays inside the dataset root and does not lead back to a
folder it is already in: ``train/dog/up -> ..`` once turned 8 images into 3,608 samples with cat
images labelled dog.

``fingerprint`` identifies the data itself, for artifact keys: every image's relative path, size
and modification time (``stat``: one ``stat`` call per file, cheap enough for ImageNet's 1.28M
images; BENCHMARKS.md) or its SHA-256 (``content``: opt-in, reads every byte), and the SHA-256 of
every metadata file a dataset reads (CSV and split files, synset overrides). Replacing, adding or
removing an image changes the key, so no stage reuses an artifact built from other data.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from relaxkd.errors import UserError

FingerprintMode = Literal["stat", "content", "none"]


_RECORDERS: list[list[Path]] = []


@contextlib.contextmanager
def recording_reads() -> Iterator[list[Path]]:
    """Collect the metadata files (CSV, split, mapping files) datasets read inside the block."""
    found: list[Path] = []
    _RECORDERS.append(found)
    try:
        yield found
    finally:
        _RECORDERS.remove(found)


def note_read(path: str | Path) -> None:
    """Called by every reader of a dataset's metadata file: it becomes part of the data fingerprint."""
    for found in _RECORDERS:
        if Path(path) not in found:
            found.append(Path(path))


def _allowed(name: str, extensions: tuple[str, ...]) -> bool:
    return name.lower().endswith(extensions)


def scan_images(directory: Path, root: Path, extensions: tuple[str, ...]) -> list[str]:
    """Image paths under ``directory`` in torchvision's order (folders sorted by path, then names)."""
    root_real = os.path.realpath(root)
    found: list[tuple[str, list[str]]] = []

    def walk(path: str, chain: tuple[str, ...]) -> None:
        files: list[str] = []
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as exc:
            raise UserError(f"cannot list folder {path}: {exc.strerror or exc}; check its permissions") from None
        for entry in entries:
            if entry.is_symlink():
                check_link(entry.path, root, root_real)
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                real = os.path.realpath(entry.path)
                if real in chain:
                    raise UserError(
                        f"symbolic link {entry.path} leads back to {real}, a folder it is inside (a loop); "
                        f"remove the link from the dataset"
                    )
                walk(entry.path, (*chain, real))
            elif _allowed(entry.name, extensions):
                files.append(entry.name)
        found.append((path, files))

    walk(str(directory), _ancestors(os.path.realpath(directory), root_real))
    found.sort(key=lambda item: item[0])  # os.walk + sorted(), as torchvision's make_dataset
    return [os.path.join(path, name) for path, names in found for name in names]


def _ancestors(real: str, root_real: str) -> tuple[str, ...]:
    """``real`` and every folder above it up to the dataset root: where a link must not lead back to."""
    chain = [real]
    while real != root_real and os.path.dirname(real) != real:
        real = os.path.dirname(real)
        chain.append(real)
    return tuple(chain)


def check_link(path: str, root: Path, root_real: str) -> None:
    try:
        target = os.path.realpath(path, strict=True)
    except (OSError, RuntimeError):
        raise UserError(f"symbolic link {path} is broken or loops; remove it from the dataset or fix its target") from None
    if os.path.commonpath([root_real, target]) != root_real:
        raise UserError(
            f"symbolic link {path} points outside the dataset root {root} (to {target}); copy the files into "
            f"the dataset or set data.root to a folder that holds them"
        )


def check_inside(paths: Iterable[str], root: Path, what: str) -> None:
    """Listed image paths (CSV, split files) must stay inside the dataset root, symbolic links included."""
    root_real = os.path.realpath(root)
    for path in paths:
        real = os.path.realpath(path)
        if os.path.commonpath([root_real, real]) != root_real:
            raise UserError(
                f"{what} lists {path}, which is outside the dataset root {root} (resolves to {real}); "
                f"list paths inside data.root"
            )


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(
    images: Iterable[str], root: str | Path | None, metadata: Iterable[str | Path] = (), mode: FingerprintMode = "stat"
) -> str:
    """SHA-256 over every image (relative path + size + mtime, or content) and every metadata file's content.

    Images are stat'ed (or hashed) in chunks by a few threads (``os.stat`` and hashing release the
    GIL; on a network file system most of the time is waiting), in order, so the digest is the same.
    """
    digest = hashlib.sha256(f"relaxkd-data-fingerprint-1 {mode}\n".encode())
    if mode == "none":
        return digest.hexdigest()
    images = [str(path) for path in images]
    prefixes = tuple({f"{str(root).rstrip(os.sep)}{os.sep}", f"{os.path.abspath(root)}{os.sep}"}) if root is not None else ()
    chunks = [images[i: i + _CHUNK] for i in range(0, len(images), _CHUNK)]
    describe = _content_lines if mode == "content" else _stat_lines
    if len(chunks) > 1:
        with ThreadPoolExecutor(min(8, (os.cpu_count() or 1) * 2)) as pool:
            parts = pool.map(lambda chunk: describe(chunk, prefixes), chunks)
            for part in parts:
                digest.update(part)
    else:
        for chunk in chunks:
            digest.update(describe(chunk, prefixes))
    for path in metadata:
        digest.update(f"meta\t{Path(path).name}\t{file_sha256(path)}\n".encode("utf-8", "surrogateescape"))
    digest.update(f"count\t{len(images)}\n".encode())
    return digest.hexdigest()


_CHUNK = 20000


def _relative(path: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if path.startswith(prefix):
            return path[len(prefix):]
    return path


def _stat_lines(paths: list[str], prefixes: tuple[str, ...]) -> bytes:
    stat, lines = os.stat, []
    try:
        for path in paths:
            st = stat(path)
            lines.append(f"{_relative(path, prefixes)}\t{st.st_size}\t{st.st_mtime_ns}\n")
    except OSError as exc:
        raise UserError(f"cannot read image {path}: {exc.strerror or exc}; replace or remove the file") from None
    return "".join(lines).encode("utf-8", "surrogateescape")


def _content_lines(paths: list[str], prefixes: tuple[str, ...]) -> bytes:
    lines = []
    try:
        for path in paths:
            lines.append(f"{_relative(path, prefixes)}\t{file_sha256(path)}\n")
    except OSError as exc:
        raise UserError(f"cannot read image {path}: {exc.strerror or exc}; replace or remove the file") from None
    return "".join(lines).encode("utf-8", "surrogateescape")
