"""The content-addressed artifact store: reuse, atomic commits, corruption detection, provenance, locks."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relaxkd.artifacts import MANIFEST, ArtifactStore, file_sha256, git_commit, run_lock
from relaxkd.errors import UserError

from conftest import REPO, tiny_overrides

SPEC = {"data": {"dataset": "digits"}, "lr": 0.1}


class CountingBuilder:
    """Builds a two-file artifact the way a stage does (lookup, else create) and counts real builds."""

    def __init__(self, store: ArtifactStore):
        self.store, self.builds = store, 0

    def get(self, spec=SPEC):
        found = self.store.lookup("toy", spec)
        if found is not None:
            return found
        self.builds += 1
        with self.store.create("toy", spec, extra={"seed": 7}) as tmp:
            (tmp / "weights.bin").write_bytes(bytes(range(256)) * 64)
            (tmp / "sub").mkdir()
            (tmp / "sub" / "metrics.json").write_text(json.dumps({"top1": 0.5}))
        return self.store.lookup("toy", spec)


def leftovers(root: Path, pattern: str) -> list[str]:
    return sorted(p.name for p in root.glob(pattern))


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "run")


def test_committed_artifact_is_reused_without_rebuilding(store):
    builder = CountingBuilder(store)
    first = builder.get()
    again = builder.get()
    assert builder.builds == 1
    assert again.path == first.path == store.path("toy", store.key("toy", SPEC))
    assert (again.path / "sub" / "metrics.json").read_text() == '{"top1": 0.5}'
    # a different spec is a different artifact
    other = builder.get({**SPEC, "lr": 0.2})
    assert builder.builds == 2 and other.path != first.path


def test_key_ignores_dict_order_but_not_values(store):
    assert store.key("toy", {"a": 1, "b": 2}) == store.key("toy", {"b": 2, "a": 1})
    assert store.key("toy", {"a": 1}) != store.key("toy", {"a": 2})
    assert store.key("toy", {"a": 1}) != store.key("other", {"a": 1})


def test_build_that_raises_leaves_nothing_trusted_and_no_temporary_dir(store):
    with pytest.raises(RuntimeError, match="killed mid-write"):
        with store.create("toy", SPEC) as tmp:
            (tmp / "weights.bin").write_bytes(b"half of the")
            raise RuntimeError("killed mid-write")
    assert store.lookup("toy", SPEC) is None
    assert not store.path("toy", store.key("toy", SPEC)).exists()
    assert leftovers(store.root, ".tmp-*") == []
    assert store.artifacts() == []


def test_build_interrupted_by_ctrl_c_leaves_nothing(store):
    with pytest.raises(KeyboardInterrupt):
        with store.create("toy", SPEC) as tmp:
            (tmp / "weights.bin").write_bytes(b"partial")
            raise KeyboardInterrupt
    assert store.lookup("toy", SPEC) is None
    assert leftovers(store.root, ".tmp-*") == []


KILLED_BUILD = """
import os, signal, sys
from relaxkd.artifacts import ArtifactStore
store = ArtifactStore(sys.argv[1])
with store.create("toy", {"data": {"dataset": "digits"}, "lr": 0.1}) as tmp:
    (tmp / "weights.bin").write_bytes(b"half of the")
    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup code can run
"""


def test_sigkilled_build_is_not_trusted_and_its_leftover_is_removed_by_the_next_build(store):
    proc = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(store.root)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    stale = leftovers(store.root, ".tmp-toy-*")
    assert len(stale) == 1  # the killed process could not clean up
    assert store.lookup("toy", SPEC) is None and store.artifacts() == []

    builder = CountingBuilder(store)
    assert builder.get() is not None and builder.builds == 1
    assert leftovers(store.root, ".tmp-*") == []  # the dead process's directory is gone


def test_temporary_dir_of_a_live_process_is_left_alone(store):
    with store.create("toy", SPEC):
        live = leftovers(store.root, ".tmp-toy-*")
        assert len(live) == 1
        CountingBuilder(store).get({**SPEC, "lr": 0.3})  # another build in the same store
        assert CountingBuilder(store).get() is not None  # even of the same key: concurrent commit
        assert leftovers(store.root, ".tmp-toy-*") == live
    assert leftovers(store.root, ".tmp-*") == []


def test_concurrent_commit_of_the_same_key_keeps_the_first(store):
    """Two processes sharing a cache root may build one artifact at once: the later commit must not fail."""
    with store.create("toy", SPEC) as outer:
        (outer / "weights.bin").write_bytes(b"outer")
        with store.create("toy", SPEC) as inner:
            (inner / "weights.bin").write_bytes(b"inner")
    found = store.lookup("toy", SPEC)
    assert found is not None and (found.path / "weights.bin").read_bytes() == b"inner"
    assert leftovers(store.root, ".tmp-*") == []


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_file_is_detected_moved_aside_and_rebuilt(store, damage):
    builder = CountingBuilder(store)
    path = builder.get().path
    victim = path / "weights.bin"
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:100])
    elif damage == "flip":
        data = bytearray(victim.read_bytes())
        data[5] ^= 0xFF
        victim.write_bytes(bytes(data))
    else:
        victim.unlink()

    assert store.lookup("toy", SPEC) is None
    assert not path.exists()
    assert leftovers(store.root, f".corrupt-{path.name}-*") != []  # kept for inspection, never used

    rebuilt = builder.get()
    assert builder.builds == 2 and rebuilt.path == path
    assert file_sha256(path / "weights.bin") == rebuilt.manifest["files"]["weights.bin"]


@pytest.mark.parametrize("manifest", ["missing", "truncated", "no file list"])
def test_directory_without_a_sound_manifest_is_not_trusted(store, manifest):
    path = CountingBuilder(store).get().path
    if manifest == "missing":
        (path / MANIFEST).unlink()
    elif manifest == "truncated":
        (path / MANIFEST).write_text((path / MANIFEST).read_text()[:40])
    else:
        (path / MANIFEST).write_text(json.dumps({"stage": "toy"}))
    assert store.artifacts() == []
    assert store.lookup("toy", SPEC) is None
    assert not path.exists()


def test_listing_skips_temporary_and_corrupt_directories(store):
    builder = CountingBuilder(store)
    good = builder.get()
    (store.root / ".tmp-toy-0123-junk").mkdir()
    (store.root / "toy-handmade").mkdir()  # looks like an artifact, has no manifest
    assert [a.path for a in store.artifacts()] == [good.path]
    assert [a.path for a in store.artifacts("toy")] == [good.path]
    assert store.artifacts("other") == []


def test_manifest_records_spec_file_hashes_versions_commit_and_seed(store):
    art = CountingBuilder(store).get()
    manifest = json.loads((art.path / MANIFEST).read_text())
    assert manifest["stage"] == "toy" and manifest["key"] == art.key
    assert manifest["spec"] == SPEC
    assert manifest["seed"] == 7
    assert manifest["files"] == {
        "sub/metrics.json": file_sha256(art.path / "sub" / "metrics.json"),
        "weights.bin": file_sha256(art.path / "weights.bin"),
    }
    assert {"python", "torch", "relaxkd"} <= set(manifest["versions"])
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode == 0:
        assert manifest["git_commit"] == head.stdout.strip() == git_commit()
    assert manifest["created"] and "command" in manifest


HOLD_LOCK = """
import sys, time
from relaxkd.artifacts import run_lock
with run_lock(sys.argv[1], wait=False):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_run_lock_held_by_another_process_makes_a_second_one_busy(tmp_path):
    run_dir = tmp_path / "runs" / "demo"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError) as info:
            with run_lock(run_dir, wait=False):
                pass
        assert str(info.value) == (
            f"run directory '{run_dir}' is busy: another relaxkd process is using it"
        )
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with run_lock(run_dir, wait=False):  # released when its holder dies
        pass


# -- a real stage killed mid-computation --------------------------------------------------------
@pytest.mark.slow
def test_killed_embed_stage_leaves_nothing_a_later_run_trusts(tmp_path, capsys, monkeypatch):
    from relaxkd import cli

    overrides = tiny_overrides(tmp_path / "runs")
    run_dir = tmp_path / "runs" / "demo"
    command = [str(Path(sys.executable).with_name("relaxkd")), "embed", "images", str(REPO / "configs" / "demo.yaml"), *overrides]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not list(run_dir.glob(".tmp-embed-images-*/config.yaml")):  # the build has started
            assert proc.poll() is None, "embed finished or failed before it could be killed"
            assert time.monotonic() < deadline, "embed never started computing"
            time.sleep(0.05)
        time.sleep(0.5)  # inside the CLIP encoding loop
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "embed finished before it was killed"
    assert list(run_dir.glob("embed-images-*")) == []
    assert ArtifactStore(run_dir).artifacts() == []
    assert len(leftovers(run_dir, ".tmp-embed-images-*")) == 1  # the half-written build

    # the rerun computes the artifact afresh and sweeps away the dead process's temporary dir
    monkeypatch.setattr(sys, "argv", ["relaxkd", "embed", "images", str(REPO / "configs" / "demo.yaml"), *overrides])
    cli.main()
    err = capsys.readouterr().err
    assert "embed-images: computing" in err and "reusing" not in err
    (artifact,) = ArtifactStore(run_dir).artifacts("embed-images")
    assert ArtifactStore(run_dir).lookup("embed-images", artifact.manifest["spec"]) is not None  # hashes verify
    assert artifact.manifest["seed"] == 0
    assert leftovers(run_dir, ".tmp-*") == []
