"""Cost of the data fingerprint in artifact keys on an ImageNet-size tree (BENCHMARKS.md).

Builds (once) a synthetic ImageFolder of ``--classes`` x ``--per-class`` small files shaped like
ImageNet's train split (1000 wnid folders, 1,281 files each = 1,281,000 entries), then times, on a
cold and a warm second pass:

- the scan ``ImageFolderDataset`` does anyway (``scan_class_folders``: symlink checks included);
- the fingerprint of every file (``data.fingerprint=stat``: relative path, size, mtime).

    python benchmarks/bench_fingerprint.py --root /tmp/fp-tree            # 1.28M entries
    python benchmarks/bench_fingerprint.py --root /tmp/fp-tree --keep     # keep the tree for a rerun

The tree takes ~1.3M inodes and no data blocks (files are 16 bytes); it is deleted afterwards unless
``--keep``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path


def build_tree(root: Path, classes: int, per_class: int) -> None:
    marker = root / f".complete-{classes}x{per_class}"
    if marker.exists():
        return
    payload = b"not an image...."
    started = time.time()
    for c in range(classes):
        folder = root / "train" / f"n{c:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            with open(folder / f"n{c:08d}_{i}.JPEG", "wb") as fh:
                fh.write(payload)
    marker.touch()
    print(f"built {classes * per_class:,} files in {time.time() - started:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--per-class", type=int, default=1281)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    from relaxkd.data.files import fingerprint
    from relaxkd.data.folders import scan_class_folders

    build_tree(args.root, args.classes, args.per_class)
    try:
        for attempt in ("first", "second"):
            started = time.time()
            _, samples = scan_class_folders(args.root / "train", None, args.root)
            scanned = time.time() - started
            paths = [path for path, _ in samples]
            started = time.time()
            for path in paths:  # the floor: one stat per file, nothing else
                os.stat(path)
            bare = time.time() - started
            started = time.time()
            digest = fingerprint(paths, args.root, mode="stat")
            fingerprinted = time.time() - started
            print(f"{attempt} pass: {len(samples):,} files: scan {scanned:.2f}s, bare os.stat loop {bare:.2f}s, "
                  f"fingerprint (stat) {fingerprinted:.2f}s ({fingerprinted / len(samples) * 1e6:.2f} us/file), {digest[:12]}")
    finally:
        if not args.keep:
            shutil.rmtree(args.root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
