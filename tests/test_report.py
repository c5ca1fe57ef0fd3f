"""The report tells a run's story: labelled rows, seeds, chance level, figures that exist (synthetic runs, no training)."""
from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

from relaxkd.report import write_report
from relaxkd.report.collect import mix_label, teachers_label

CLASSES = ["zero", "one", "two", "three", "four", "five"]


class FakeRun:
    """Artifact directories shaped like the stages' (metrics.json, teacher/student.json, manifest.json)."""

    def __init__(self, root: Path, dataset: str = "digits", classes=CLASSES, shots: bool = False):
        self.root, self.dataset, self.classes, self.shots = root, dataset, classes, shots
        self.n = 0
        root.mkdir(parents=True, exist_ok=True)
        self._write(
            "embed-images",
            {"data": dataset},
            {
                "classes.json": {
                    "classes": classes,
                    "synsets": [f"{c}.n.01" for c in classes],
                    "glosses": [f"the number {c}" for c in classes],
                    "senses": [2] * len(classes),
                }
            },
        )

    def _write(self, stage: str, spec: dict, files: dict, seed: int = 0) -> tuple[str, Path]:
        self.n += 1
        key = hashlib.sha256(str(self.n).encode()).hexdigest()[:16]
        path = self.root / f"{stage}-{key}"
        path.mkdir()
        for name, data in files.items():
            (path / name).write_text(json.dumps(data))
        from relaxkd.artifacts import MANIFEST_DIGEST, file_sha256, manifest_digest

        digests = {name: file_sha256(path / name) for name in files}
        manifest = {"stage": stage, "key": key, "spec": spec, "seed": seed, "files": digests}
        manifest[MANIFEST_DIGEST] = manifest_digest(manifest)  # whole, as the store writes them
        (path / "manifest.json").write_text(json.dumps(manifest))
        return key, path

    def _metrics(self, top1: float, epochs: int, seed: int, **prov) -> dict:
        history = [{"epoch": e, "top1": top1 * (e + 1) / epochs, "top5": 100.0, "num_samples": 90} for e in range(epochs)]
        metrics = {"top1": top1, "top5": 100.0, "num_samples": 90, "history": history,
                   "provenance": {"dataset": self.dataset, "demo_data": self.dataset == "digits", "clip": "relaxkd-tiny/none",
                                  "random_weight_clip": True, "seed": seed, "epochs": epochs, **prov}}
        if self.shots:
            metrics.update(many_shot=80.0, medium_shot=60.0, few_shot=40.0)
        return metrics

    def _classes(self) -> dict:
        """What every teacher.json / student.json holds (records.ModelInfo)."""
        return {"dataset": self.dataset, "num_classes": len(self.classes), "classes": list(self.classes)}

    def member(self, name: str, aug: str, top1: float) -> str:
        info = {"kind": "unimodal", "name": name, "arch": "tiny_cnn", "aug": aug, **self._classes()}
        return self._write(
            "teacher-unimodal", {"member": name}, {"teacher.json": info, "metrics.json": self._metrics(top1, 4, 0)}
        )[0]

    def tx(self, proportions: dict, top1: float, seed: int, share: float) -> tuple[str, str, str]:
        info = {"kind": "multimodal", **self._classes()}
        key, path = self._write(
            "teacher-multimodal",
            {"seed": seed, "p": proportions},
            {"teacher.json": info, "metrics.json": self._metrics(top1, 6, seed, proportions=proportions, bank="learnable")},
            seed,
        )
        _, att = self._write(
            "attribute",
            {"teacher": key},
            {"attribution.json": {"image_share": share, "text_share": 1 - share, "num_samples": 90}},
            seed,
        )
        return key, str(path), str(att)

    def student(self, teachers: dict[str, str], loss: str, top1: float, seed: int) -> str:
        info = {"kind": "student", "arch": "tiny_cnn", **self._classes()}
        metrics = self._metrics(top1, 5, seed, teachers=list(teachers) if loss != "none" else [], loss=loss)
        return str(
            self._write("distill", {"teachers": teachers, "seed": seed}, {"student.json": info, "metrics.json": metrics}, seed)[1]
        )

    def record(self, family: str, trials: dict) -> None:
        (self.root / f"sweep-{family}.json").write_text(json.dumps(trials))


def story_run(root: Path, seeds=(0, 1, 2)) -> FakeRun:
    run = FakeRun(root)
    tm = {
        "strong": run.member("strong", "strong", 70.0),
        "weak": run.member("weak", "weak", 80.0),
        "strong2": run.member("strong2", "strong", 72.0),
    }
    table1, table2 = {}, {}
    for seed in seeds:
        wn_key, wn_path, wn_att = run.tx({"wn": 1.0}, 85.0 + seed, seed, 0.8)
        gt_key, gt_path, gt_att = run.tx({"gt": 1.0}, 100.0, seed, 0.3)
        students = {
            "ours": run.student({"strong": tm["strong"], "weak": tm["weak"], "tx": wn_key}, "kd", 78.0 + seed, seed),
            "ensemble-kd": run.student(tm, "kd", 75.0 + 2 * seed, seed),
            "no-kd": run.student({}, "none", 60.0 + seed, seed),
        }
        for name, path in students.items():
            table1.setdefault(name, {"labels": {"method": name}, "overrides": [], "runs": {}})["runs"][str(seed)] = {
                "distill": path
            }
        for mix, (path, att, gt) in {"gt100-wn0": (gt_path, gt_att, 1.0), "gt0-wn100": (wn_path, wn_att, 0.0)}.items():
            key = gt_key if gt else wn_key
            s_tx = run.student({"tx": key}, "kd", 50.0 + 20 * (1 - gt) + seed, seed)
            s_all = run.student({"strong": tm["strong"], "weak": tm["weak"], "tx": key}, "kd", 70.0 + 8 * (1 - gt) + seed, seed)
            labels = {"gt": gt, "other": "wn", "other_share": 1 - gt}
            table2.setdefault(f"{mix}/tx-s", {"labels": {**labels, "teachers": "T_x S_s"}, "overrides": [], "runs": {}})["runs"][
                str(seed)
            ] = {"tx": path, "attribute": att, "distill": s_tx}
            table2.setdefault(f"{mix}/tm-tx-s", {"labels": {**labels, "teachers": "T_m T_x S_s"}, "overrides": [], "runs": {}})[
                "runs"
            ][str(seed)] = {"distill": s_all}
    run.record("table1", table1)
    run.record("table2", table2)
    (root / "run.json").write_text(json.dumps({"artifacts": {"distill": table1["ours"]["runs"]["0"]["distill"]}}))
    return run


def test_table1_reports_mean_std_over_seeds_and_paired_difference(tmp_path):
    story_run(tmp_path / "demo")
    text = write_report(tmp_path / "demo").read_text()
    table1 = text.split("## Table 1")[1].split("\n## ")[0]
    assert "3 seed(s)" in table1
    ours = next(line for line in table1.splitlines() if line.startswith("| ours |"))
    # ours: 78, 79, 80 -> 79.0 ± 1.0; ensemble: 75, 77, 79; paired differences 3, 2, 1 -> +2.0 ± 1.0
    assert "79.0 ± 1.0" in ours and "78.0, 79.0, 80.0" in ours and "+2.0 ± 1.0" in ours
    assert "T_m (T1s T2w) + T_x, KD" in ours and "wn 100 %" in ours
    assert "| 83.33 |" in ours  # the paper's CIFAR-100 number, in the reference column
    assert "paper, CIFAR-100 (reference)" in table1
    assert "no teacher (CE only)" in table1
    assert "ours − ensemble KD = +2.0 ± 1.0 points (paired over 3 seeds)" in text
    assert "Teachers' own top-1" in table1 and "T2w 80.0" in table1


def test_report_says_chance_sizes_seeds_and_explains_terms(tmp_path):
    story_run(tmp_path / "demo")
    text = write_report(tmp_path / "demo").read_text()
    assert "6 classes" in text and "Chance level: 16.7 %" in text and "Seeds: 3 (0, 1, 2)" in text
    assert "90 validation images" in text
    glossary = text.split("## Glossary")[1].split("\n## ")[0]
    for term in ("**T_x**", "**T_m**", "**S_s**", "**gt**", "**wn**", "**noise**", "**image share**"):
        assert term in glossary
    # top-5 over 6 classes and many/medium/few on balanced data mean nothing: not shown
    assert "top-5" not in text.split("## Every trained model")[1].split("|---")[0]
    assert "many-shot" not in text
    # provenance says epochs of what
    assert "T_m members (tiny_cnn): trained 4 epochs each" in text
    assert "T_x teachers: trained 6 epochs each" in text and "students (tiny_cnn): trained 5 epochs each" in text
    assert "random-weight CLIP" in text and "demo data" in text


def test_rows_are_labelled_hashes_last_and_taught_tx_is_marked(tmp_path):
    story_run(tmp_path / "demo")
    report = write_report(tmp_path / "demo")
    text = report.read_text()
    models = text.split("## Every trained model")[1].split("\n## ")[0]
    header = next(line for line in models.splitlines() if line.startswith("| model"))
    assert header.rstrip(" |").endswith("artifact")
    assert "T_m member T1s (tiny_cnn, strong aug.)" in models
    starred = [line for line in models.splitlines() if "★" in line and line.startswith("|")]
    assert len(starred) == 1 and "T_x [wn 100 %]" in starred[0] and "main run" in starred[0]
    assert "table1 ours (seed 0)" in models
    attribution = text.split("## Attribution")[1].split("\n## ")[0]
    assert "T_x [gt 100 %]" in attribution and "T_x [wn 100 %]" in attribution
    rows = list(csv.reader(open(report.parent / "table1_students.csv")))
    assert rows[0][0] == "method" and rows[1][0] == "ours"


def test_table2_measures_the_leakage_story(tmp_path):
    story_run(tmp_path / "demo")
    text = write_report(tmp_path / "demo").read_text()
    assert "the best teacher is T_x [gt 100 %] (100.0 %)" in text
    assert (
        "Its student T_x S_s reaches 51.0 %, worse than the T_x S_s of T_x [wn 100 %] (71.0 %): the leakage story holds here."
        in text
    )
    table2 = text.split("## Table 2")[1].split("\n## ")[0]
    assert "| gt 100 % | 100.0 ± 0.0 |" in table2


def test_figures_exist_are_referenced_and_csv_names_are_plain(tmp_path):
    story_run(tmp_path / "demo")
    report = write_report(tmp_path / "demo")
    text = report.read_text()
    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert {"figure2_teacher_student_by_text_mix.png", "figure3_attribution_shares.png", "validation_history_teachers_tm.png",
            "validation_history_teachers_tx.png", "validation_history_students.png"} <= set(pngs)
    for name in pngs:
        assert (report.parent / name).stat().st_size > 1000
    for path in report.parent.glob("*.csv"):
        assert re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*\.csv", path.name), path.name
        assert path.name in text
    assert "the number zero" in text  # class -> synset glosses


def test_long_tailed_runs_show_shot_columns_and_many_classes_top5(tmp_path):
    run = FakeRun(tmp_path / "lt", dataset="cifar100_lt", classes=[f"c{i}" for i in range(20)], shots=True)
    run.member("strong", "strong", 50.0)
    text = write_report(tmp_path / "lt").read_text()
    models = text.split("## Every trained model")[1]
    assert "many-shot %" in models and "top-5 %" in models


def test_labels():
    assert mix_label({"gt": 0.2, "wn": 0.8}) == "gt 20 % / wn 80 %"
    assert mix_label({"gt": 0.0, "wn": 1.0}) == "wn 100 %"
    assert teachers_label(["strong", "weak", "strong2"], "zscore") == "T_m (T1s T2w T3s), z-score KD"
    assert teachers_label(["strong"], "dkd") == "T1s, DKD"


def test_table1_has_the_papers_rows_and_dataset_columns(tmp_path):
    story_run(tmp_path / "demo")
    text = write_report(tmp_path / "demo").read_text()
    table = text.split("## Table 1 in the paper's layout")[1].split("\n## ")[0]
    header = next(line for line in table.splitlines() if line.startswith("| method |"))
    assert header == "| method | CIFAR-100 | CIFAR-100-LT | ImageNet | ImageNet-LT | Scene | UTKFace | digits (this run) |"
    rows = [
        line.split(" | ")[0].removeprefix("| ")
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith("| method")
    ]
    assert rows == ["LFME", "DMAE", "FFKD", "z-score KD", "ensemble KD", "DKD", "vanilla KD", "no KD", "ours"]
    ours = next(line for line in table.splitlines() if line.startswith("| ours |"))
    assert "paper 83.33" in ours and "paper 52.58" in ours and ours.rstrip(" |").endswith("79.0 ± 1.0")
    assert "long-tailed data only" in next(line for line in table.splitlines() if line.startswith("| LFME |"))


def test_report_written_from_another_directory_finds_relative_artifact_paths(tmp_path, monkeypatch):
    run = story_run(tmp_path / "runs" / "demo")
    for record in (tmp_path / "runs" / "demo").glob("sweep-*.json"):  # as `relaxkd run` writes them: relative to its cwd
        record.write_text(record.read_text().replace(str(tmp_path) + "/", ""))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    text = write_report(tmp_path / "runs" / "demo").read_text()
    assert "| gt 100 % | 100.0 ± 0.0 |" in text and "0.30 ± 0.00" in text  # image shares found
    assert "figure3_attribution_shares.png" in text
    assert run is not None
