"""Reliability and reproducibility of `relaxkd run` end to end (issue 8).

Same seed, same numbers; a run SIGKILLed in any stage resumes (training stages from their last
checkpoint) to exactly the numbers of an uninterrupted run; two runs started together on one run
directory both succeed. The artifact store's own guarantees (atomic commit, damaged or truncated
files and manifests moved aside and rebuilt, stale temporary dirs removed, the run lock) are unit
tested in test_artifacts.py; here the real CLI is driven in subprocesses.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from relaxkd.artifacts import Artifact, ArtifactStore, file_sha256, stable_hash
from relaxkd.config import load_config

from conftest import REPO, tiny_overrides

CONFIG = REPO / "configs" / "demo.yaml"
PAUSE_ENV = "RELAXKD_TEST_PAUSE"
PAUSED = "[test-hook] paused at "

# Runs in the child in place of `python -m relaxkd`: stops the process at the point named by
# RELAXKD_TEST_PAUSE and says where on stderr, so the test SIGKILLs it exactly there instead of
# racing a timer (most demo stages take well under a second).
#   build:<stage>   inside the stage's build, once its first output file is in the temporary dir
#   fit:<stage>     after the first epoch's checkpoint of the first fit of <stage> that starts
#                   from scratch (a resumed fit of an earlier kill is let through)
#   report          after the report's first CSV table
HOOK = r'''
import os, sys, time
from pathlib import Path

def pause(where):
    print(f"[test-hook] paused at {where}", file=sys.stderr, flush=True)
    while True:
        time.sleep(60)

kind, _, stage = os.environ.get("RELAXKD_TEST_PAUSE", "").partition(":")
if kind == "build":
    import importlib

    def paused_after(write):
        def wrapped(*args, **kwargs):
            result = write(*args, **kwargs)
            for arg in args:
                if isinstance(arg, (str, os.PathLike)) and f"/.tmp-{stage}-" in str(arg):
                    pause(arg)
            return result
        return wrapped

    for name in ("embed_images", "embed_nouns", "relax", "unimodal", "multimodal", "targets", "distill", "attribute"):
        module = importlib.import_module(f"relaxkd.stages.{name}")
        for attr in ("save_file", "write_json"):
            if hasattr(module, attr):
                setattr(module, attr, paused_after(getattr(module, attr)))
elif kind == "fit":
    import relaxkd.engine.trainer as trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    fresh, fit, save = [], trainer.fit, ModelCheckpoint._save_checkpoint

    def watched_fit(tr, module, data, work_dir):
        work_dir = Path(work_dir)
        if not fresh and work_dir.name.startswith(stage + "-") and not (work_dir / "checkpoints" / "last.ckpt").exists():
            fresh.append(work_dir)
        return fit(tr, module, data, work_dir)

    def watched_save(self, tr, filepath):
        save(self, tr, filepath)
        if fresh and Path(filepath).parent.parent == fresh[0]:
            pause(filepath)

    trainer.fit, ModelCheckpoint._save_checkpoint = watched_fit, watched_save
elif kind == "report":
    import relaxkd.report as report

    write_csv = report.Table.write_csv

    def watched_csv(self, path):
        write_csv(self, path)
        pause(path)

    report.Table.write_csv = watched_csv
elif kind:
    raise SystemExit(f"unknown pause point {kind!r}")
from relaxkd.cli import main

sys.argv = ["relaxkd", *sys.argv[1:]]
main()
'''


@dataclass
class Run:
    returncode: int
    stderr: str
    paused_at: Path | None


def relaxkd_run(root: Path, pause: str | None = None, hash_seed: int = 0, timeout: float = 600) -> Run:
    """`relaxkd run` of the tiny demo into ``root``; with ``pause``, SIGKILLed at that point (see HOOK).

    ``hash_seed``: PYTHONHASHSEED, pinned so runs that must agree see different set orders for sure.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src"),
           "PYTHONHASHSEED": str(hash_seed)}
    env.pop(PAUSE_ENV, None)
    entry = ["-m", "relaxkd"]  # uninterrupted runs use the real entry point
    if pause is not None:
        env[PAUSE_ENV], entry = pause, ["-c", HOOK]
    proc = subprocess.Popen(
        [sys.executable, *entry, "run", str(CONFIG), *tiny_overrides(root)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    timer = threading.Timer(timeout, proc.kill)  # a hung run fails the test instead of blocking it
    timer.start()
    lines, paused_at = [], None
    try:
        for line in proc.stderr:
            lines.append(line)
            if line.startswith(PAUSED):
                paused_at = Path(line[len(PAUSED):].strip())
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    return Run(proc.returncode, "".join(lines), paused_at)


def stores(root: Path) -> list[ArtifactStore]:
    return [ArtifactStore(root / "demo"), ArtifactStore(root / "_shared")]


def artifacts(root: Path) -> dict[str, Artifact]:
    return {a.path.name: a for store in stores(root) for a in store.artifacts()}


def untimed(value):
    """JSON without wall-clock timings (``*seconds`` keys, e.g. relax's info.json): all a rerun may change."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if not k.endswith("seconds")}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def assert_same_results(root: Path, reference: Path) -> None:
    """Every artifact of ``reference`` exists under ``root`` with the same numbers and bit-identical tensors."""
    got, want = artifacts(root), artifacts(reference)
    assert sorted(got) == sorted(want)  # same keys: nothing in them depends on the run root
    assert {a.stage for a in want.values()} == {
        "embed-images", "embed-nouns", "relax", "teacher-unimodal", "teacher-multimodal", "attribute", "distill"}
    for name, art in want.items():
        assert sorted(got[name].manifest["files"]) == sorted(art.manifest["files"]), name
        for file, digest in art.manifest["files"].items():
            if file.endswith(".json"):  # metrics, attribution, ...: every number
                assert untimed(got[name].read_json(file)) == untimed(art.read_json(file)), f"{name}/{file}"
            elif file != "config.yaml":  # which records the run root; weights, embeddings, bank: every bit
                assert got[name].manifest["files"][file] == digest, f"{name}/{file}"
    assert (root / "demo" / "report" / "report.md").read_text() == (reference / "demo" / "report" / "report.md").read_text()


def assert_consistent(root: Path) -> None:
    """No leftovers of interrupted or concurrent builds, and every artifact verifies against its manifest."""
    for store in stores(root):
        assert sorted(p.name for p in store.root.glob(".tmp-*")) == []
        for art in store.artifacts():
            assert store.lookup(art.stage, art.manifest["spec"]) is not None, art.path  # SHA-256 of every file
    assert list((root / "demo" / ".work").glob("*")) == []  # checkpoints go once committed


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory):
    """Uninterrupted runs, started together in the background: ``a`` alone, ``b`` by two processes at once.

    They overlap the kill-and-resume test below on the second core; each test waits for what it needs.
    """
    base = tmp_path_factory.mktemp("reference")
    pool = ThreadPoolExecutor(3)
    runs = {"a": pool.submit(relaxkd_run, base / "a", hash_seed=0),
            "b": [pool.submit(relaxkd_run, base / "b", hash_seed=seed) for seed in (2, 3)]}
    yield base, runs
    pool.shutdown(wait=True)


def uninterrupted(reference_runs) -> Path:
    base, runs = reference_runs
    run = runs["a"].result()
    assert run.returncode == 0, run.stderr[-3000:]
    return base / "a"


# -- killed anywhere ---------------------------------------------------------------------------
# One chained sequence: each run is killed at the next point and is itself the rerun that must pick
# up the previous kill. The demo trains T_m strong, then weak, so `fit:teacher-unimodal` twice.
KILL_POINTS = [
    "build:embed-images",
    "build:embed-nouns",
    "build:relax",
    "fit:teacher-unimodal",
    "fit:teacher-unimodal",
    "fit:teacher-multimodal",
    "build:attribute",
    "fit:distill",
    "report",
]
TMP_NAME = re.compile(r"\.tmp-(?P<stage>[a-z-]+)-(?P<key>[0-9a-f]{16})-")


@pytest.mark.parametrize("kill_points", [
    # the default suite: the student resumed, plus the damaged artifact (a half-built one: test_artifacts.py)
    pytest.param(["fit:distill"], id="student"),
    pytest.param(KILL_POINTS, id="every-stage", marks=pytest.mark.slow),  # ~10 processes
])
def test_run_killed_anywhere_resumes_to_the_uninterrupted_results(reference_runs, tmp_path, kill_points):
    root = tmp_path / "killed"
    previous: tuple[str, Path] | None = None  # the last kill: (kind, file it paused after)
    damaged: tuple[str, Path] | None = None  # the kill after which a committed artifact was damaged
    for point in [*kill_points, None]:
        run = relaxkd_run(root, pause=point, hash_seed=len(kill_points) + 2)  # unlike the reference's 0
        if previous is not None:
            kind, where = previous
            # the rerun picks up where the kill left: recomputes the half-built artifact (and removes the
            # dead process's temporary dir) or resumes training from the checkpoint, never from scratch
            if kind == "build":
                tmp = where.parent
                stage, key = TMP_NAME.match(tmp.name).group("stage", "key")
                final = tmp.parent / f"{stage}-{key}"
                assert f"{stage}: computing -> {final}" in run.stderr
                assert not tmp.exists() and final.is_dir()
            elif kind == "fit":
                assert f"resuming from checkpoint {where}" in run.stderr, run.stderr[-3000:]
                assert not where.parent.parent.exists()  # the work dir goes once the artifact is committed
                assert (root / "demo" / where.parent.parent.name).is_dir()
            if previous == damaged:
                assert "relax: computing" in run.stderr and list((root / "demo").glob(".corrupt-relax-*"))
        if point is None:
            assert run.returncode == 0, run.stderr[-3000:]
            break
        assert run.paused_at is not None and run.returncode == -signal.SIGKILL, (
            f"the run never reached {point}: exit {run.returncode}\n{run.stderr[-3000:]}")
        kind = point.partition(":")[0]
        if kind == "build":
            # the half-built artifact sits under its temporary name: nothing a later run could take for it
            match = TMP_NAME.match(run.paused_at.parent.name)
            assert match and match["stage"] == point.partition(":")[2] and run.paused_at.is_file()
            assert not (run.paused_at.parent.parent / f"{match['stage']}-{match['key']}").exists()
        elif kind == "fit":
            assert run.paused_at.name == "last.ckpt" and run.paused_at.is_file()
            assert not (root / "demo" / run.paused_at.parent.parent.name).exists()
        previous = (kind, run.paused_at)
        if point.startswith("fit:") and damaged is None:
            # a committed artifact damaged in place (same size, one byte): the next run must notice by
            # its manifest hash and rebuild it, never use it (store-level cases: test_artifacts.py)
            damaged = previous
            (bank,) = (root / "demo").glob("relax-*/bank.safetensors")
            data = bytearray(bank.read_bytes())
            data[-1] ^= 0xFF
            bank.write_bytes(bytes(data))
    assert_consistent(root)
    assert_same_results(root, uninterrupted(reference_runs))


# -- two processes on one run directory ------------------------------------------------------------
def test_two_runs_started_together_on_one_directory_both_succeed(reference_runs):
    base, runs = reference_runs
    results = [f.result() for f in runs["b"]]
    for run in results:
        assert run.returncode == 0, run.stderr[-3000:]
    # one computed everything while the other waited on the run lock, then reused every artifact
    waited = [r for r in results if "waiting for another relaxkd process" in r.stderr]
    assert len(waited) == 1, [r.stderr[-2000:] for r in results]
    assert "computing" not in waited[0].stderr and waited[0].stderr.count(": reusing ") >= 7
    assert_consistent(base / "b")
    assert_same_results(base / "b", uninterrupted(reference_runs))


# -- determinism and provenance ------------------------------------------------------------------
def test_candidate_nouns_do_not_depend_on_wordnet_pointer_order(monkeypatch):
    # NLTK keeps WordNet pointers in sets, so hypernyms()/hyponyms() come in an order that follows
    # PYTHONHASHSEED (two.n.01's hyponyms craps/couple flipped between seeds 0 and 2), and with it the
    # noun list, its embeddings and relax's indices did; reversed lists stand in for another seed
    from nltk.corpus.reader.wordnet import Synset

    from relaxkd.wordnet import neighbourhood_nouns

    classes = ["two.n.01", "dog.n.01"]
    before = neighbourhood_nouns(classes, hypernym_depth=2)
    for relation in ("hypernyms", "instance_hypernyms", "hyponyms"):
        original = getattr(Synset, relation)
        monkeypatch.setattr(Synset, relation, lambda self, original=original: original(self)[::-1])
    assert neighbourhood_nouns(classes, hypernym_depth=2) == before
    assert {"craps", "couple", "puppy", "canine"} <= set(before)


INPUTS = {  # the stages each one is built from, in the demo
    "embed-images": [],
    "embed-nouns": [],
    "relax": ["embed-images", "embed-nouns"],
    "teacher-unimodal": [],
    "teacher-multimodal": ["embed-images", "relax"],
    "attribute": ["teacher-multimodal"],
    "distill": ["teacher-multimodal", "teacher-unimodal", "teacher-unimodal"],
}


def test_same_seed_gives_identical_artifacts_and_manifests_record_provenance(reference_runs):
    base, _ = reference_runs
    a = uninterrupted(reference_runs)
    # b's runs are in another run root and started at another moment: only the seed is shared
    assert_same_results(base / "b", a)

    cfg = load_config(CONFIG, tiny_overrides(a))
    has_git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True).returncode == 0
    found = artifacts(a)
    for name, art in found.items():
        m = art.manifest
        assert m["seed"] == 0 and m["config_hash"] == stable_hash(cfg.to_dict())[:16], name
        assert {"python", "torch", "lightning", "open_clip_torch", "relaxkd"} <= set(m["versions"]), name
        if has_git:  # the commit checked out when it was built: HEAD then, so HEAD or an ancestor of it now
            ancestor = ["git", "merge-base", "--is-ancestor", str(m["git_commit"]), "HEAD"]
            assert re.fullmatch(r"[0-9a-f]{40}", str(m["git_commit"])), name
            assert subprocess.run(ancestor, cwd=REPO, capture_output=True).returncode == 0, (name, m["git_commit"])
        # inputs: the artifacts it was built from, each present and named (by key) in its spec
        assert sorted(i.rsplit("-", 1)[0] for i in m["inputs"]) == INPUTS[art.stage], name
        for inp in m["inputs"]:
            assert inp in found and found[inp].key in str(m["spec"]), (name, inp)
        assert all(file_sha256(art.path / f) == h for f, h in m["files"].items()), name
