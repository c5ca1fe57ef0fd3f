"""Distillation (issue 5): offline end to end, adaptive weights, export, bad input, DDP and resume.

Teachers (T_m strong + weak, T_x with wn text) are trained once per module on the tiny demo
config; tests that need their own run directory copy them there. CLI runs are subprocesses with
one thread each, so they are deterministic and two of them can share the 2-core machine.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from relaxkd.artifacts import ArtifactStore
from relaxkd.config import load_config
from relaxkd.data.transforms import IMAGENET_STATS
from relaxkd.distill import StudentDistiller, StudentSettings, TeacherSet
from relaxkd.engine.settings import OptimConfig
from relaxkd.errors import UserError
from relaxkd.models import build_backbone
from relaxkd.report import write_report
from relaxkd.stages.context import Context
from relaxkd.stages.distill import distill
from relaxkd.stages.embed_images import embed_images
from relaxkd.stages.export import export_student
from relaxkd.stages.multimodal import multimodal_teacher
from relaxkd.stages.predict import load_exported, load_student
from relaxkd.stages.targets import teacher_targets
from relaxkd.stages.teacher_loading import load_teachers
from relaxkd.stages.unimodal import unimodal_teacher

from conftest import REPO, tiny_overrides
from data_fixtures import write_scene

#: T_x sees only WordNet-relaxed text (no ground-truth class names)
TEACHERS = ["multimodal.proportions={wn: 1.0}", "distill.teachers=[strong, weak, tx]"]


def overrides(run_root: Path, *extra: str) -> list[str]:
    return tiny_overrides(run_root) + TEACHERS + list(extra)


def pipeline(run_root: Path, *extra: str) -> Context:
    torch.set_num_threads(1)  # module-scoped callers run before the autouse thread fixture
    return Context(load_config(REPO / "configs" / "demo.yaml", overrides(run_root, *extra)))


def _refuse_network(self, address, *args, **kwargs):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        raise OSError(f"network access in an offline test: {address}")
    return _connect(self, address, *args, **kwargs)


_connect = socket.socket.connect


@pytest.fixture(scope="module")
def teachers_root(tmp_path_factory):
    """A run root holding the trained teachers, trained with the network switched off."""
    root = tmp_path_factory.mktemp("distill") / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _refuse_network)
        p = pipeline(root)
        for name in ("strong", "weak"):
            unimodal_teacher(p, name)
        multimodal_teacher(p)
    return root


def copy_root(src: Path, dst: Path) -> Path:
    """A separate run root with the same (content-addressed) teacher artifacts."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock", ".work", ".tmp-*", "distill-*", "report"))
    return dst


# ------------------------------------------------------------------------------------ in-process


def test_student_from_tm_and_wn_tx_trains_offline_and_report_names_random_clip(teachers_root):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _refuse_network)
        art = distill(pipeline(teachers_root))
        report = write_report(teachers_root / "demo").read_text()
    metrics = art.read_json("metrics.json")
    assert metrics["provenance"]["teachers"] == ["strong", "weak", "tx"]
    assert metrics["provenance"]["random_weight_clip"] is True
    assert [h["epoch"] for h in metrics["history"]] == [0, 1]
    assert metrics["num_samples"] == 360  # the whole digits validation split
    assert metrics["top1"] > 25.0, metrics["top1"]  # chance is 10 %; measured 44 after 2 tiny epochs
    assert "random-weight CLIP" in report


class _Recorded(StudentDistiller):
    built: list[StudentDistiller] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _Recorded.built.append(self)


@pytest.mark.parametrize("params, beta", [(None, 4.0), ("{beta: 6.0}", 6.0)])
def test_per_method_settings_reach_the_trained_student_and_its_record(teachers_root, tmp_path, monkeypatch, params, beta):
    """Issue 21: distill.methods[<loss>] was validated and hashed but the student trained with the recipe."""
    import relaxkd.distill

    monkeypatch.setattr(relaxkd.distill, "StudentDistiller", _Recorded)
    _Recorded.built.clear()
    extra = ["distill.loss=dkd", "distill.teachers=[strong]", "distill.methods={dkd: {beta: 4.0, warmup_epochs: 5}}"]
    art = distill(
        pipeline(copy_root(teachers_root, tmp_path / "runs"), *extra, *([f"distill.params={params}"] if params else []))
    )
    (module,) = _Recorded.built
    assert (module.method.params.beta, module.method.params.warmup_epochs) == (beta, 5)
    assert module.method.kd_factor(SimpleNamespace(epoch=0)) == pytest.approx(1 / 5)  # warm-up of 5 epochs, not DKD's 20
    recorded = art.read_json("metrics.json")["provenance"]["params"]
    assert recorded == {"temperature": 4.0, "ce_weight": 1.0, "kd_weight": 1.0, "alpha": 1.0, "beta": beta, "warmup_epochs": 5}


def test_tx_from_cached_embeddings_names_them_among_the_distillation_inputs(teachers_root):
    p = pipeline(teachers_root, "distill.tx_input=cached")
    manifest = distill(p).manifest
    embeddings = embed_images(p)
    assert f"embed-images-{embeddings.key}" in manifest["inputs"]
    assert manifest["spec"]["tx_embeddings"] == embeddings.key
    online = distill(pipeline(teachers_root)).manifest
    assert not any(name.startswith("embed-images-") for name in online["inputs"]) and "clip" in online["spec"]


def test_adaptive_aggregation_records_teacher_weights_summing_to_one(teachers_root):
    history = distill(pipeline(teachers_root, "distill.aggregate=adaptive")).read_json("metrics.json")["history"]
    assert len(history) == 2
    weights = [[h[f"weight_{n}"] for n in ("strong", "weak", "tx")] for h in history]
    for per_epoch in weights:
        assert sum(per_epoch) == pytest.approx(1.0, abs=1e-6)
        assert all(w > 0 for w in per_epoch)
    assert weights[0] == pytest.approx([1 / 3] * 3)  # epoch 0 trains with uniform weights
    # later epochs use inverse validation losses (the authors': CE + KD terms, so the shared CE term
    # pulls the weights together; test_protocol checks the formula): no longer uniform
    assert max(weights[1]) - min(weights[1]) > 1e-4, weights[1]


# ------------------------------------------------------------------------ cached teacher targets


def test_compressed_targets_keep_the_top_k_softened_probabilities_and_the_rest_mass():
    from relaxkd.distill.targets import compress, expand

    logits = torch.randn(3, 5, 10, generator=torch.Generator().manual_seed(0)) * 3
    assert torch.equal(expand(compress(logits, 0, 4.0), 10), logits)  # top_k = 0: exact
    stored = compress(logits, 3, 4.0)
    assert stored["indices"].dtype == torch.int16 and stored["values"].shape == (3, 5, 3)
    p, q = (F.softmax(z / 4.0, -1) for z in (logits, expand(stored, 10)))
    top = logits.topk(3, -1).indices
    torch.testing.assert_close(q.gather(-1, top), p.gather(-1, top))  # kept classes: exact
    rest = q.scatter(-1, top, 0.0)
    torch.testing.assert_close(rest.sum(-1), 1 - p.gather(-1, top).sum(-1))  # the rest's mass is kept...
    torch.testing.assert_close(rest.max(-1).values * 7, rest.sum(-1))  # ...spread evenly over 7 classes


def test_cached_targets_replay_the_online_distillation_bit_for_bit_without_running_teachers(teachers_root):
    from relaxkd.engine.sampling import sample_seed
    from relaxkd.models import TeacherEnsemble
    from relaxkd.teachers import MultimodalTeacher

    online = distill(pipeline(teachers_root))
    p = pipeline(teachers_root, "distill.targets=cached")
    targets = teacher_targets(p)
    recorded = load_file(str(targets.file("epoch-0001.safetensors")))
    assert torch.equal(recorded["aug_seeds"], sample_seed(0, 1, torch.arange(len(p.raw_train))))
    assert recorded["logits"].shape == (3, len(p.raw_train), 10)  # strong, weak, tx
    with pytest.MonkeyPatch.context() as mp:
        for cls, method in ((TeacherEnsemble, "forward"), (MultimodalTeacher, "logits")):
            mp.setattr(cls, method, lambda *a, **k: pytest.fail("a teacher ran during cached distillation"))
        cached = distill(p)
    assert cached.key != online.key
    for name in ("student.safetensors",):
        a, b = load_file(str(online.file(name))), load_file(str(cached.file(name)))
        assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda m: {k: v for k, v in m.items() if k != "provenance"}  # noqa: E731
    assert strip(cached.read_json("metrics.json")) == strip(online.read_json("metrics.json"))
    # another student recipe on the same teachers, views and epochs replays the same cache
    assert teacher_targets(pipeline(teachers_root, "distill.targets=cached", "distill.kd_weight=0.5")).key == targets.key


def test_cached_targets_refuse_an_epoch_they_do_not_cover(teachers_root):
    from relaxkd.distill import CachedTargets

    targets = teacher_targets(pipeline(teachers_root, "distill.targets=cached"))
    replay = CachedTargets(targets.path, num_teachers=3, num_classes=10, epochs=2, seed=0)
    assert len(replay.logits("train", 1, torch.tensor([0, 5]))) == 3
    with pytest.raises(UserError, match="cover 2 epochs, the student asked for epoch 3"):
        replay.logits("train", 2, torch.tensor([0]))
    with pytest.raises(UserError, match="recorded for another seed"):
        CachedTargets(targets.path, num_teachers=3, num_classes=10, epochs=2, seed=1).logits("train", 0, torch.tensor([0]))


def test_device_batch_stage_records_the_same_targets_and_trains_the_same_student(tmp_path):
    """data.batch_stage=device on the CPU (the loader hands over uint8 crops + draws, Lightning's
    on_after_batch_transfer finishes them): teacher targets recorded and the student trained from
    them are bit-identical to the loader's batch stage (images <= BATCH_OPS_MAX_SIZE)."""
    from torch.utils.data import Subset

    from relaxkd.config import TrainerConfig
    from relaxkd.data import build_dataset, build_transform
    from relaxkd.distill import CachedTargets, build_targets
    from relaxkd.engine.sampling import SeededAugmentation
    from relaxkd.engine.trainer import SeededDataModule, build_trainer

    raw = Subset(build_dataset("digits", None, "train"), range(80))
    torch.manual_seed(0)
    teacher = build_backbone("tiny_cnn", 10, "none").eval()

    def logits(images, targets, indices, split):
        with torch.no_grad():
            return [teacher(images)]

    recorded, students = {}, {}
    for stage in ("loader", "device"):
        train = SeededAugmentation(raw, build_transform("strong", 8, IMAGENET_STATS, batch_stage=stage), seed=0)
        out = tmp_path / stage / "targets"
        out.mkdir(parents=True)
        build_targets(logits, train, Subset(train, []), out=out, work=tmp_path / stage / "work", epochs=2, seed=0,
                      batch_size=32, num_workers=0, top_k=0, temperature=4.0, device=torch.device("cpu"))
        recorded[stage] = load_file(str(out / "epoch-0001.safetensors"))
        replay = CachedTargets(out, num_teachers=1, num_classes=10, epochs=2, seed=0)
        torch.manual_seed(0)
        settings = StudentSettings("tiny_cnn", OptimConfig(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0, milestones=[2]))
        module = StudentDistiller(settings, num_classes=10, input_stats=IMAGENET_STATS,
                                  teachers=TeacherSet(names=["strong"], cached=replay))
        trainer = build_trainer(
            TrainerConfig(accelerator="cpu", devices=1, progress=False, logger="none"), tmp_path / stage / "fit", 2
        )
        trainer.limit_val_batches = 0
        trainer.fit(module, datamodule=SeededDataModule(train, None, 32, 0, seed=0))
        students[stage] = module.student.state_dict()
    assert recorded["loader"].keys() == recorded["device"].keys()
    assert all(torch.equal(recorded["loader"][k], recorded["device"][k]) for k in recorded["loader"])
    assert all(torch.equal(students["loader"][k], students["device"][k]) for k in students["loader"])


def student_and_val_logits(teachers_root):
    """The distilled student's artifact, the validation images and the checkpoint's logits on them."""
    p = pipeline(teachers_root)
    art = distill(p)
    reference = build_backbone("tiny_cnn", p.num_classes, "none")
    reference.load_state_dict(load_file(str(art.file("student.safetensors"))))
    reference.eval()
    val = p.augmented(p.raw_val, "test", IMAGENET_STATS)
    images = torch.stack([val[i][0] for i in range(len(val))])
    labels = torch.tensor([val[i][1] for i in range(len(val))])
    with torch.no_grad():
        expected = reference(images)
    return p, art, images, labels, expected


def test_exported_student_gives_the_checkpoint_logits(teachers_root, tmp_path):
    p, art, images, labels, expected = student_and_val_logits(teachers_root)
    # the artifact's student is the trained one: it reproduces the reported accuracy
    top1 = 100.0 * (expected.argmax(1) == labels).float().mean().item()
    assert top1 == pytest.approx(art.read_json("metrics.json")["top1"], abs=1e-4)

    written = export_student(p, tmp_path / "ts", "torchscript", artifact=art.path)
    assert {f.name for f in written} == {"student.safetensors", "student.json", "student.torchscript.pt"}
    scripted, info = load_exported(tmp_path / "ts")  # what predict runs: the TorchScript file
    assert isinstance(scripted, torch.jit.ScriptModule)
    assert info["classes"][:2] == ["zero", "one"] and info["image_size"] == 8
    rebuilt, _ = load_student(tmp_path / "ts", "")  # from student.safetensors, as for an ONNX export
    with torch.no_grad():
        assert torch.equal(rebuilt(images), expected)
        torch.testing.assert_close(scripted(images), expected, atol=1e-6, rtol=1e-6)


def test_onnx_export_gives_the_checkpoint_logits(teachers_root, tmp_path):
    p, art, images, _, expected = student_and_val_logits(teachers_root)
    onnx = pytest.importorskip("onnx")
    written = export_student(p, tmp_path / "onnx", "onnx", artifact=art.path)
    assert written[-1].name == "student.onnx"
    onnx.checker.check_model(onnx.load(str(written[-1])))
    import onnxruntime  # in the test extras: the numeric comparison runs by default (CI included)

    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "student.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"images": images.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------ bad input


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_kd_without_teachers_is_refused():
    from relaxkd.config import check_names

    with pytest.raises(UserError) as err:
        check_names(load_config(REPO / "configs" / "demo.yaml", ["distill.teachers=[]"]))
    assert "KD method 'kd' needs teachers" in one_line(err) and "distill.loss=none" in str(err.value)
    with pytest.raises(UserError) as err:
        StudentDistiller(StudentSettings("tiny_cnn", loss="dkd"), num_classes=10, teachers=TeacherSet(names=[]))
    assert "'dkd' needs teachers" in one_line(err)
    # no KD, no teachers: a plain supervised student is fine
    StudentDistiller(StudentSettings("tiny_cnn", loss="none"), num_classes=10)


def test_unknown_aggregation_is_refused_listing_valid_ones():
    with pytest.raises(UserError) as err:
        load_config(REPO / "configs" / "demo.yaml", ["distill.aggregate=median"])
    assert "distill.aggregate" in one_line(err) and "'adaptive'" in str(err.value)
    with pytest.raises(UserError) as err:
        StudentDistiller(StudentSettings("tiny_cnn", aggregate="median"), num_classes=10, teachers=TeacherSet(names=["a"]))
    assert one_line(err) == "unknown aggregate 'median'; valid aggregates: adaptive, mean_logits, mean_losses"


def test_teachers_of_another_dataset_are_refused_naming_both(teachers_root, tmp_path):
    digits = pipeline(teachers_root)
    artifacts = {"strong": unimodal_teacher(digits, "strong"), "tx": multimodal_teacher(digits)}
    scene = write_scene(tmp_path / "scene", [i % 6 for i in range(60)])
    other = pipeline(tmp_path / "runs", "data.dataset=scene", f"data.root={scene}")
    with pytest.raises(UserError) as err:
        load_teachers(other, artifacts)
    message = one_line(err)
    assert "teacher 'strong'" in message
    assert "trained on digits with 10 classes" in message and "this run is scene with 6 classes" in message


# ------------------------------------------------------------------------------------ CLI: DDP, resume


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(run_root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "relaxkd", "distill", str(REPO / "configs" / "demo.yaml"), *overrides(run_root, *extra)]


def cli_env() -> dict[str, str]:
    # one thread per process: reproducible numbers, and two runs can share the 2 cores
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port()), "PYTHONPATH": str(REPO / "src")}


def distill_artifact(run_root: Path):
    found = ArtifactStore(run_root / "demo").artifacts("distill")
    assert len(found) == 1, found
    return found[0]


def test_two_process_cpu_ddp_distillation_completes(teachers_root, tmp_path):
    root = copy_root(teachers_root, tmp_path / "runs")
    command = cli(root, "trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu")
    done = subprocess.run(command, env=cli_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr  # really two processes
    art = distill_artifact(root)
    assert art.file("student.safetensors").stat().st_size > 0
    metrics = art.read_json("metrics.json")
    assert [h["epoch"] for h in metrics["history"]] == [0, 1]
    # validation logits gathered from both ranks, one row per sample
    assert all(h["num_samples"] == 360 for h in metrics["history"])
    assert metrics["top1"] > 15.0, metrics["top1"]
    # only rank 0 writes: no leftover temporary or duplicate artifacts
    assert not list((root / "demo").glob(".tmp-*")) and not list((root / "demo").glob(".corrupt-*"))


@pytest.mark.slow
def test_ddp_trains_missing_teachers_then_the_student_in_one_command(tmp_path):
    """Each training stage of one command gets fresh DDP workers (they used to exit after the first)."""
    command = cli(tmp_path / "runs", "trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu")
    done = subprocess.run(command, env=cli_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("GLOBAL_RANK: 1, MEMBER: 2/2") == 4  # strong, weak, T_x, student
    assert distill_artifact(tmp_path / "runs").read_json("metrics.json")["num_samples"] == 360


RESUME_EPOCHS = "distill.optim={epochs: 4, batch_size: 128, lr: 0.05, warmup_epochs: 1, milestones: [2]}"


@pytest.mark.slow  # ~60 s: three CLI runs
def test_killed_distillation_resumes_to_the_same_metrics(teachers_root, tmp_path):
    straight = copy_root(teachers_root, tmp_path / "straight")
    killed = copy_root(teachers_root, tmp_path / "killed")
    # the uninterrupted reference runs alongside, on the other core
    reference = subprocess.Popen(cli(straight, RESUME_EPOCHS), env=cli_env(), cwd=tmp_path,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = None
    try:
        first = subprocess.Popen(cli(killed, RESUME_EPOCHS), env=cli_env(), cwd=tmp_path,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        checkpoints: list[Path] = []
        while not checkpoints and first.poll() is None and time.monotonic() < deadline:
            checkpoints = list((killed / "demo" / ".work").glob("distill-*/checkpoints/last.ckpt"))
            time.sleep(0.05)
        assert checkpoints and first.poll() is None, "the run must be killed while training"
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert not ArtifactStore(killed / "demo").artifacts("distill")
        saved_epoch = torch.load(checkpoints[0], map_location="cpu", weights_only=False)["epoch"]
        assert saved_epoch < 3  # stopped before the last epoch

        resumed = subprocess.run(cli(killed, RESUME_EPOCHS), env=cli_env(), cwd=tmp_path,
                                 capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"resuming from checkpoint {checkpoints[0]}" in resumed.stderr
        _, reference_err = reference.communicate(timeout=300)
        assert reference.returncode == 0, reference_err[-3000:]
    finally:
        for proc in (reference, first):
            if proc is not None and proc.poll() is None:
                proc.kill()
    got, want = distill_artifact(killed), distill_artifact(straight)
    assert len(want.read_json("metrics.json")["history"]) == 4
    assert got.read_json("metrics.json") == want.read_json("metrics.json")
    got_weights, want_weights = load_file(str(got.file("student.safetensors"))), load_file(str(want.file("student.safetensors")))
    assert all(torch.equal(got_weights[k], want_weights[k]) for k in want_weights)


def test_top_k_cache_temperature_is_the_students_method_temperature():
    """distill.temperature is optional (null: the method's recipe); a top-k cache's fill value needs a
    number: the one the student's method will use (a None here crashed teacher-targets)."""
    from relaxkd.stages.targets import cache_temperature

    demo = REPO / "configs" / "demo.yaml"
    assert cache_temperature(load_config(demo, []).distill) is None  # exact cache: no temperature
    assert cache_temperature(load_config(demo, ["distill.cache_top_k=3", "distill.temperature=2.5"]).distill) == 2.5
    recipe = cache_temperature(load_config(demo, ["distill.cache_top_k=3", "distill.temperature=null"]).distill)
    assert recipe == 3.0  # kd's recipe (the authors' τ 3)
    dkd = ["distill.cache_top_k=3", "distill.temperature=null", "distill.loss=dkd"]
    assert cache_temperature(load_config(demo, dkd).distill) == 4.0  # DKD's recipe
    # the method's own settings reach the cache too (they were dropped here before issue 21)
    assert cache_temperature(load_config(demo, [*dkd, "distill.methods={dkd: {temperature: 5.0}}"]).distill) == 5.0
