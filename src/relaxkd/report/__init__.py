"""Reports: one Markdown page that tells a run's story, its tables as CSV, PNG figures like the paper's.

``write_report(run_dir)`` reads the run's artifacts and sweep records (see ``collect.py``) and writes
``<run_dir>/report/report.md``. Rows are labelled by what they are (trial, teachers, text mix);
artifact hashes come last. Numbers are reported as measured.
"""
from __future__ import annotations

import sys

import csv
import math
from pathlib import Path
from typing import Any

from relaxkd.errors import UserError
from relaxkd.report.collect import (
    LOSS_NAMES,
    Model,
    RunView,
    Trial,
    dataset_sizes,
    fmt_mean_std,
    mean_std,
    member_alias,
    mix_label,
    teachers_label,
)
from relaxkd.artifacts import ArtifactStore, atomic_output
from relaxkd.names import TX

#: student top-1 (%) published in the paper (Table 1, "ours"), for real CLIP weights and data.
PAPER_STUDENT_TOP1 = {
    "cifar100": 83.33,
    "cifar100_lt": 52.58,
    "imagenet": 70.14,
    "imagenet_lt": 50.06,
    "scene": 93.07,
    "utkface": 86.71,
}
#: the paper's CIFAR-100 Table 1 (student top-1 %) by trial name, as far as this project records it.
PAPER_CIFAR100_TABLE1: dict[str, float] = {"ours": PAPER_STUDENT_TOP1["cifar100"]}

GLOSSARY = [
    ("T_m", "the image teachers: ResNets fine-tuned on the images; T1s and T3s with strong augmentation "
            "(AutoAugment + Cutout), T2w with weak augmentation. Ensemble KD distils from T1s T2w T3s."),
    ("T_x", "the multimodal teacher: classifies [CLIP image embedding, text embedding]. Its text per sample is "
            "one of gt / wn / noise in the proportions of its *text mix*."),
    ("S_s", "the student: a plain image classifier trained with strong augmentation; no text, no CLIP at inference. "
            "`T_x S_s` = taught by T_x alone, `T_m T_x S_s` = taught by T_m and T_x (the method)."),
    ("gt", "T_x's text is the exact class name: it leaks the label (the teacher looks perfect, teaches little)."),
    ("wn", "T_x's text is a soft retrieval, with the sample's own image embedding, from the WordNet-relaxed bank "
           "(nouns near each image cluster, Algorithm 1): no label is used."),
    ("noise", "T_x's text is the name of a random class."),
    ("image share", "share of T_x's Integrated-Gradients attribution on the image half of its input (text share = 1 − image share)."),
    ("ours", "the method: S_s taught by T_m + T_x with 0 % gt / 100 % wn text (eq. 1: mean of the teachers' logits)."),
]


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


class Table:
    def __init__(self, title: str, header: list[str], csv_name: str):
        self.title, self.header, self.csv_name = title, header, csv_name
        self.rows: list[list[str]] = []
        self.intro: list[str] = []
        self.notes: list[str] = []

    def add(self, *row: Any) -> None:
        self.rows.append([_fmt(v) for v in row])

    def markdown(self) -> str:
        lines = [f"## {self.title}", ""]
        if self.intro:
            lines += self.intro + [""]
        lines += ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        lines += ["", f"CSV: [`{self.csv_name}`]({self.csv_name})"]
        return "\n".join(lines) + "\n"

    def write_csv(self, directory: Path) -> None:
        with atomic_output(directory / self.csv_name) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(self.header)
            writer.writerows(self.rows)


def write_report(run_dir: str | Path) -> Path:
    """Write ``<run_dir>/report/report.md`` (+ CSV tables and PNG figures); return its path."""
    from relaxkd.report import figures as figs

    run_dir = Path(run_dir)
    damaged: list[tuple[Path, str]] = []
    # every file checked against its manifest: an edited metrics.json never reaches the tables
    artifacts = ArtifactStore(run_dir).artifacts(verify=True, damaged=damaged)
    for path, reason in damaged:
        print(f"[relaxkd] report: leaving out {path}: {reason}; rerun the command that built it", file=sys.stderr, flush=True)
    if not artifacts:
        raise UserError(f"no results in {str(run_dir)!r}: run `relaxkd run CONFIG` first (or pass the run directory it printed)")
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    view = RunView(run_dir, artifacts)
    sizes = dataset_sizes(run_dir, artifacts)
    num_classes = len(sizes.get("classes") or []) or _num_classes(view)
    chance = 100.0 / num_classes if num_classes else None
    ctx = {"num_classes": num_classes, "chance": chance, "sizes": sizes}

    tables: list[Table] = []
    summary: list[str] = []
    for build in (_table1, _table1_paper_layout, _table2, _table3, _figure2_table):
        table, lines = build(view, ctx)
        if table is not None:
            tables.append(table)
            summary += lines
    details: list[Table] = [_models_table(view, ctx)]  # after the figures: for looking things up
    attribution = _attribution_table(view)
    if attribution is not None:
        details.append(attribution)
    synsets = _synset_table(sizes)
    if synsets is not None:
        details.append(synsets)

    figures: list[tuple[str, str]] = []
    for name in figs.figure2(view, out, chance):
        figures.append((name, "Teacher (T_x) and student top-1 against the share of exact class names in T_x's text "
                              "(solid: the rest is wn text, dashed: the rest is noise); error bars: std over seeds."))
    for name in figs.figure3(view, out):
        figures.append((name, "Image vs text share of T_x's attribution (Integrated Gradients), per text mix."))
    for name in figs.history_figures(view, out, chance):
        figures.append((name, "Validation top-1 after each epoch, one figure per stage family."))

    lines = [f"# relaxkd report: {run_dir.name}", ""]
    if view.caveat:
        lines += ["> **These numbers come from random-weight models and/or the tiny demo data. They exercise the real "
                  "pipeline but are not comparable with the paper's results** (the paper's CIFAR-100 numbers appear "
                  "only as a labelled reference).", ""]
    lines += _at_a_glance(view, ctx) + [""]
    if summary:
        lines += ["**What this run measured.**", ""] + [f"- {s}" for s in summary] + [""]
    lines += ["## Glossary", ""] + [f"- **{term}**: {text}" for term, text in GLOSSARY] + [""]
    for table in tables:
        lines.append(table.markdown())
        table.write_csv(out)
    if figures:
        lines += ["## Figures", ""]
        for name, caption in figures:
            lines += [f"![{Path(name).stem}]({name})", "", f"*{name}*: {caption}", ""]
    for table in details:
        lines.append(table.markdown())
        table.write_csv(out)
    lines += ["## Provenance", ""] + [f"- {p}" for p in _provenance(view, ctx)]
    report = out / "report.md"
    with atomic_output(report) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return report


def _num_classes(view: RunView) -> int | None:
    for model in view.models:
        if model.info.get("num_classes"):
            return int(model.info["num_classes"])
    return None


def _at_a_glance(view: RunView, ctx: dict[str, Any]) -> list[str]:
    sizes, prov = ctx["sizes"], view.provenance
    parts = [f"Dataset `{prov.get('dataset', '?')}`"]
    if ctx["num_classes"]:
        parts.append(f"{ctx['num_classes']} classes")
    if sizes.get("num_train") is not None:
        parts.append(f"{sizes['num_train']:,} training / {sizes['num_val']:,} validation images")
    else:
        val = next((m.metrics.get("num_samples") for m in view.models if m.metrics.get("num_samples")), None)
        if val:
            parts.append(f"{val:,} validation images")
    line = ", ".join(parts) + "."
    if ctx["chance"] is not None:
        line += f" Chance level: {ctx['chance']:.1f} % top-1."
    seeds = view.seeds
    line += f" Seeds: {len(seeds)} ({', '.join(map(str, seeds))})." if seeds else ""
    line += (" Every number is top-1 accuracy (%) on the validation split after the last epoch; no checkpoint "
             "is picked on it.")
    return [line]


def _seed_cells(values: dict[int, float]) -> str:
    return ", ".join(f"{v:.1f}" for _, v in sorted(values.items())) or "–"


def _keys(models: dict[int, Model]) -> str:
    return " ".join(m.key[:8] for _, m in sorted(models.items())) or "–"


def _tx_of(view: RunView, student: Model) -> Model | None:
    key = student.teacher_keys().get(TX)
    return view.by_key.get(key) if key else None


def _table1(view: RunView, ctx: dict[str, Any]) -> tuple[Table | None, list[str]]:
    trials = view.trials.get("table1", [])
    if not trials:
        return None, []
    seeds_all = sorted({s for t in trials for s in t.runs})
    t = Table(
        f"Table 1 (in small): student top-1 by distillation method, {len(seeds_all)} seed(s)",
        ["method", "teachers", "T_x text mix", "student top-1 % (mean ± std)", "per seed", "Δ vs ensemble KD (paired)",
         "paper, CIFAR-100 (reference)", "artifacts"],
        "table1_students.csv",
    )
    baseline = next((tr for tr in trials if tr.name == "ensemble-kd"), None)
    base_values = baseline.values(view, "distill") if baseline else {}
    summary = []
    for trial in trials:
        students = trial.models(view, "distill")
        values = {s: m.top1 for s, m in students.items() if m.top1 is not None}
        first = next(iter(students.values()), None)
        teachers = teachers_label(first.prov.get("teachers", []), first.prov.get("loss")) if first else "–"
        tx = _tx_of(view, first) if first else None
        mix = mix_label(tx.prov.get("proportions")) if tx else "–"
        diff = _paired(values, base_values) if baseline and trial is not baseline else None
        t.add(trial.name, teachers, mix, fmt_mean_std(list(values.values())), _seed_cells(values),
              diff or "–", _paper(trial.name), _keys(students))
        if trial.name == "ours" and diff:
            summary.append(f"Table 1: ours {fmt_mean_std(list(values.values()))} vs ensemble KD "
                           f"{fmt_mean_std(list(base_values.values()))}; ours − ensemble KD = {diff} points "
                           f"(paired over {len(set(values) & set(base_values))} seeds).")
    t.intro.append("Every student has the same architecture and recipe (epochs, optimiser, augmentation); only the "
                   "teachers and the KD loss differ. Δ: per-seed difference to the ensemble-KD student with the same seed, "
                   "mean ± std over seeds.")
    teacher_line = _teacher_line(view, trials)
    if teacher_line:
        t.intro.append(teacher_line)
    t.notes.append("paper column: the paper's CIFAR-100 student top-1 where this project records it (ResNet18 student, "
                   "real CLIP weights, 500 epochs): a reference for the ordering, not a number this dataset can reach.")
    if ctx["chance"] is not None:
        t.notes.append(f"chance level: {ctx['chance']:.1f} %.")
    return t, summary


#: the paper's Table 1 column labels, by dataset name
TABLE1_COLUMN_LABELS = {"cifar100": "CIFAR-100", "cifar100_lt": "CIFAR-100-LT", "imagenet": "ImageNet",
                        "imagenet_lt": "ImageNet-LT", "scene": "Scene", "utkface": "UTKFace"}


def _table1_paper_layout(view: RunView, ctx: dict[str, Any]) -> tuple[Table | None, list[str]]:
    """Table 1 with the paper's rows (methods) and columns (its six datasets): this run fills its
    dataset's column; the paper's published number for "ours" stands beside it for reference."""
    from relaxkd.trials import TABLE1_DATASETS, TABLE1_ROWS

    trials = {t.name: t for t in view.trials.get("table1", [])}
    if not trials:
        return None, []
    dataset = next((m.prov.get("dataset") for t in trials.values() for m in t.models(view, "distill").values()), None)
    columns = list(TABLE1_DATASETS) + ([dataset] if dataset and dataset not in TABLE1_DATASETS else [])
    labels = [TABLE1_COLUMN_LABELS.get(c, f"{c} (this run)") for c in columns]
    t = Table("Table 1 in the paper's layout: student top-1 % by method (rows) and dataset (columns)",
              ["method", *labels], "table1_paper_layout.csv")
    for name, label in TABLE1_ROWS.items():
        cells = []
        for column in columns:
            if column != dataset:
                paper = PAPER_STUDENT_TOP1.get(column) if name == "ours" else None
                cells.append(f"paper {paper:.2f}" if paper is not None else "–")
                continue
            trial = trials.get(name)
            values = [m.top1 for m in trial.models(view, "distill").values() if m.top1 is not None] if trial else []
            if values:
                cells.append(fmt_mean_std(values))
            elif name == "lfme":
                cells.append("long-tailed data only")
            else:
                cells.append("not run")
        t.add(label, *cells)
    t.intro.append(f"This run fills the `{dataset}` column (mean ± std over its seeds); other columns need a run of "
                   "`relaxkd sweep configs/<dataset>.yaml --family table1` on that dataset. The paper's published "
                   "student top-1 for its method is shown as `paper …` where this project records it.")
    t.notes.append("LFME runs on long-tailed datasets only (CIFAR-100-LT, ImageNet-LT), as in its paper; FFKD is a "
                   "reconstruction (no public code); DMAE's student is a ViT (distill.vit_student) pre-trained by MAE "
                   "with feature distillation: see docs/reproduction.md.")
    return t, []


def _paired(values: dict[int, float], base: dict[int, float]) -> str | None:
    common = sorted(set(values) & set(base))
    if not common:
        return None
    diffs = [values[s] - base[s] for s in common]
    mean, std = mean_std(diffs)
    return f"{mean:+.1f}" + (f" ± {std:.1f}" if std is not None else " (1 seed)")


def _teacher_line(view: RunView, trials: list[Trial]) -> str | None:
    """The teachers' own accuracy on the same validation set, for context."""
    seen: dict[str, dict[str, float]] = {}
    for trial in trials:
        for student in trial.models(view, "distill").values():
            for name, key in student.teacher_keys().items():
                teacher = view.by_key.get(key)
                if teacher is not None and teacher.top1 is not None:
                    seen.setdefault("T_x" if name == TX else member_alias(name), {})[key] = teacher.top1
    parts = [f"{label} {fmt_mean_std(list(v.values()))}" if len(v) > 1 else f"{label} {next(iter(v.values())):.1f}"
             for label, v in seen.items()]
    return ("Teachers' own top-1 on the same validation set: " + ", ".join(parts) + ".") if parts else None


def _table2(view: RunView, ctx: dict[str, Any]) -> tuple[Table | None, list[str]]:
    from relaxkd.report.figures import mix_series

    series = mix_series(view)
    if not series:
        return None, []
    t = Table(
        "Table 2 (in small): T_x text mix → teacher and students",
        ["T_x text mix", "T_x top-1 % (teacher)", "T_x S_s top-1 %", "T_m T_x S_s top-1 %", "T_x image share", "seeds"],
        "table2_text_mix.csv",
    )
    rows = []
    for other, points in sorted(series.items(), key=lambda kv: kv[0] != "wn"):
        for gt, row in sorted(points, key=lambda p: -p[0]):
            mix = mix_label({"gt": gt, other: round(1 - gt, 6)})
            seeds = sorted({s for v in row.values() if isinstance(v, dict) for s in v})
            t.add(mix, fmt_mean_std(list(row.get(TX, {}).values())), fmt_mean_std(list(row.get("T_x S_s", {}).values())),
                  fmt_mean_std(list(row.get("T_m T_x S_s", {}).values())),
                  fmt_mean_std(list(row.get("share", {}).values()), 2), ", ".join(map(str, seeds)) or "–")
            rows.append((mix, row))
    t.intro.append("T_x is evaluated with its own text mix (validation samples get text in the same proportions). "
                   "The paper's claim: the more exact class names (gt), the better T_x looks and the worse it teaches.")
    if not any(k in row for _, row in rows for k in ("T_x S_s", "T_m T_x S_s")):
        t.notes.append("students were not trained in this sweep (sweep_students=false); "
                       "`relaxkd sweep CONFIG --family table2 sweep_students=true` trains them")
    return t, _leakage_summary(rows)


def _leakage_summary(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    teachers = [(mean_std(list(row[TX].values()))[0], mix, row) for mix, row in rows if row.get(TX)]
    if not teachers:
        return []
    best_value, best_mix, best_row = max(teachers, key=lambda x: x[0])
    lines = [f"Table 2: the best teacher is T_x [{best_mix}] ({best_value:.1f} %)."]
    wn = next(((mix, row) for mix, row in rows if mix == "wn 100 %"), None)
    for who in ("T_x S_s", "T_m T_x S_s"):
        best_student = best_row.get(who)
        if not best_student or wn is None or not wn[1].get(who) or best_mix == wn[0]:
            continue
        a, b = mean_std(list(best_student.values()))[0], mean_std(list(wn[1][who].values()))[0]
        verdict = "worse than" if a < b else ("as good as" if a == b else "better than")
        lines.append(f"Its student {who} reaches {a:.1f} %, {verdict} the {who} of T_x [wn 100 %] ({b:.1f} %)"
                     + (": the leakage story holds here." if a < b else ": this run does not show the leakage story."))
    return lines


def _table3(view: RunView, ctx: dict[str, Any]) -> tuple[Table | None, list[str]]:
    trials = view.trials.get("table3", [])
    if not trials:
        return None, []
    t = Table("Table 3 (in small): fixed (n_pretrained) vs learnable relaxed bank",
              ["bank", "T_x top-1 %", "student top-1 % (T_m T_x S_s)", "T_x image share", "artifacts"], "table3_bank.csv")
    for trial in trials:
        t.add(trial.labels.get("bank", trial.name), fmt_mean_std(list(trial.values(view, TX).values())),
              fmt_mean_std(list(trial.values(view, "distill").values())), fmt_mean_std(list(trial.shares(view).values()), 2),
              _keys(trial.models(view, TX)))
    return t, []


def _figure2_table(view: RunView, ctx: dict[str, Any]) -> tuple[Table | None, list[str]]:
    trials = view.trials.get("figure2", [])
    if not trials:
        return None, []
    t = Table("Figure 2 (in small): text-only T_x and its student T_x S_s by wn share (the rest gt)",
              ["wn %", "text-only T_x top-1 %", "student top-1 % (T_x S_s)", "artifacts"], "figure2_text_only.csv")
    for trial in sorted(trials, key=lambda tr: float(tr.labels.get("wn", 0))):
        t.add(f"{100 * float(trial.labels.get('wn', 0)):g}", fmt_mean_std(list(trial.values(view, TX).values())),
              fmt_mean_std(list(trial.values(view, "distill").values())), _keys(trial.models(view, TX)))
    return t, []


def _has(view: RunView, key: str) -> bool:
    return any(isinstance(m.metrics.get(key), (int, float)) and not math.isnan(m.metrics[key]) for m in view.models)


_ORDER = {"teacher-unimodal": 0, "teacher-multimodal": 1, "distill": 2}


def _models_table(view: RunView, ctx: dict[str, Any]) -> Table:
    top5 = (ctx["num_classes"] or 0) > 10
    shots = [k for k in ("many_shot", "medium_shot", "few_shot") if _has(view, k)]
    header = ["model", "used in", "seed", "epochs", "top-1 %"] + (["top-5 %"] if top5 else [])
    header += [k.replace("_", "-") + " %" for k in shots] + ["T_x taught", "artifact"]
    t = Table("Every trained model in this run", header, "models.csv")
    main_tx = None
    main = view.model_at(view.main.get("distill"))
    if main is not None:
        main_tx = main.teacher_keys().get(TX)
    models = sorted(view.models, key=lambda m: (_ORDER.get(m.stage, 9), m.role, m.seed if isinstance(m.seed, int) else 0))
    for m in models:
        taught = ""
        if m.stage == "teacher-multimodal":
            students = view.taught(m)
            taught = f"{len(students)} student(s)" if students else "none"
            if m.key == main_tx:
                taught = "★ taught the main run's student; " + taught
        uses = "; ".join(m.uses) or "–"
        row = [m.role, uses, m.seed, m.prov.get("epochs"), m.top1] + ([m.metrics.get("top5")] if top5 else [])
        row += [m.metrics.get(k) for k in shots] + [taught or "", m.key]
        t.add(*row)
    t.intro.append("Rows: T_m members, then T_x teachers (by text mix), then students (by teachers). "
                   "★ marks the T_x that taught the main run's student.")
    if not top5:
        t.notes.append(f"top-5 is not shown: with {ctx['num_classes']} classes it says little.")
    return t


def _attribution_table(view: RunView) -> Table | None:
    rows = []
    for art in view.other:
        if art.stage != "attribute":
            continue
        from relaxkd.report.collect import read_json

        result = read_json(art.path, "attribution.json")
        teacher = view.by_key.get((art.manifest.get("spec") or {}).get("teacher", ""))
        label = teacher.role if teacher else "T_x (artifact not in this run)"
        uses = "; ".join(teacher.uses) if teacher else ""
        rows.append((label, uses, result, art.key))
    if not rows:
        return None
    t = Table("Attribution (Integrated Gradients on T_x)", ["T_x", "used in", "image share", "text share", "samples", "artifact"],
              "attribution.csv")
    for label, uses, r, key in sorted(rows, key=lambda x: x[0]):
        t.add(label, uses or "–", _fmt(r.get("image_share"), 3), _fmt(r.get("text_share"), 3), r.get("num_samples"), key)
    return t


def _synset_table(sizes: dict[str, Any]) -> Table | None:
    classes, synsets = sizes.get("classes") or [], sizes.get("synsets") or []
    if not classes or len(classes) != len(synsets):
        return None
    glosses = sizes.get("glosses") or [None] * len(classes)
    senses = sizes.get("senses") or [None] * len(classes)
    t = Table("Classes and their WordNet senses", ["class", "synset", "gloss", "noun senses of the name"], "class_synsets.csv")
    for name, synset, gloss, count in zip(classes, synsets, glosses, senses):
        t.add(name, synset, gloss or "–", count)
    t.intro.append("The sense decides the class's place in WordNet (neighbourhood candidates, hierarchy). A wrong sense "
                   "is fixed with a `class_name: synset.n.NN` line in the file named by `data.synset_overrides`.")
    return t


def _provenance(view: RunView, ctx: dict[str, Any]) -> list[str]:
    prov = view.provenance
    lines = []
    clip = prov.get("clip", "?")
    lines.append(f"CLIP: {clip}" + (" (random-weight CLIP: not the paper's)" if prov.get("random_weight_clip") else ""))
    lines.append(f"dataset: {prov.get('dataset', '?')}" + (" (bundled demo data)" if prov.get("demo_data") else ""))
    families = {"teacher-unimodal": "T_m members", "teacher-multimodal": "T_x teachers", "distill": "students"}
    for stage, label in families.items():
        epochs = sorted({m.prov.get("epochs") for m in view.models if m.stage == stage and m.prov.get("epochs")})
        if epochs:
            archs = sorted({m.info.get("arch") for m in view.models if m.stage == stage and m.info.get("arch")})
            what = f" ({', '.join(archs)})" if archs else ""
            lines.append(f"{label}{what}: trained {', '.join(map(str, epochs))} epochs each")
    inits = sorted({m.prov["head_init"]["note"] for m in view.models
                    if m.stage == "teacher-multimodal" and isinstance(m.prov.get("head_init"), dict) and m.prov.get("head") == "resnet50-1x1"})
    for note in inits:  # the authors start it from ImageNet weights: say when this run could not
        lines.append(f"T_x resnet50-1x1 head: {note}")
    losses = sorted({LOSS_NAMES.get(m.prov.get("loss"), m.prov.get("loss")) for m in view.models if m.stage == "distill" and m.prov.get("loss")})
    if losses:
        lines.append(f"student losses: {', '.join(losses)}")
    lines.append(f"seeds: {', '.join(map(str, view.seeds)) or '?'}")
    return lines


def _paper(trial: str) -> str:
    value = PAPER_CIFAR100_TABLE1.get(trial)
    return f"{value:.2f}" if value is not None else "–"
