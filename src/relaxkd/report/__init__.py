"""Reports: one Markdown page that tells a run's story, its tables as CSV, PNG figures like the paper's.

``write_report(run_dir)`` reads the run's artifacts and sweep records (see ``collect.py``) and writes
``<run_dir>/report/report.md``. Rows are labelled by what they are (trial, teachers, text mix);
artifact hashes come last. Numbers are reported as measured.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from relaxkd.artifacts import ArtifactStore, atomic_output
from relaxkd.errors import UserError
from relaxkd.names import TX
from relaxkd.report.collect import LOSS_NAMES, MULTIMODAL, STUDENT, UNIMODAL, RunView, dataset_sizes, read_json
from relaxkd.report.compare import method_vs_no_kd
from relaxkd.report.paper_tables import figure2_table, table1, table1_paper_layout, table2, table3
from relaxkd.report.table import Table, fmt

GLOSSARY = [
    (
        "T_m",
        "the image teachers: ResNets fine-tuned on the images; T1s and T3s with strong augmentation "
        "(AutoAugment + Cutout), T2w with weak augmentation. Ensemble KD distils from T1s T2w T3s.",
    ),
    (
        "T_x",
        "the multimodal teacher: classifies [CLIP image embedding, text embedding]. Its text per sample is "
        "one of gt / wn / noise in the proportions of its *text mix*.",
    ),
    (
        "S_s",
        "the student: a plain image classifier trained with strong augmentation; no text, no CLIP at inference. "
        "`T_x S_s` = taught by T_x alone, `T_m T_x S_s` = taught by T_m and T_x (the method).",
    ),
    ("gt", "T_x's text is the exact class name: it leaks the label (the teacher looks perfect, teaches little)."),
    (
        "wn",
        "T_x's text is a soft retrieval, with the sample's own image embedding, from the WordNet-relaxed bank "
        "(nouns near each image cluster, Algorithm 1): no label is used.",
    ),
    (
        "noise",
        "the sample's label is replaced once by a random class, whose name is T_x's text and its training target "
        "(the released code's label noise; validation stays clean); with multimodal.noise=text only the text.",
    ),
    (
        "image share",
        "share of T_x's Integrated-Gradients attribution on the image half of its input (text share = 1 − image share).",
    ),
    ("ours", "the method: S_s taught by T_m + T_x with 0 % gt / 100 % wn text (eq. 1: mean of the teachers' logits)."),
]


def write_report(run_dir: str | Path) -> Path:
    """Write ``<run_dir>/report/report.md`` (+ CSV tables and PNG figures); return its path."""
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
    for build in (table1, table1_paper_layout, table2, table3, figure2_table):
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

    figures = _figures(view, out, chance)
    lines = [f"# relaxkd report: {run_dir.name}", ""]
    if view.caveat:
        lines += ["> **These numbers come from random-weight models and/or the tiny demo data. They exercise the real "
                  "pipeline but are not comparable with the paper's results** (the paper's CIFAR-100 numbers appear "
                  "only as a labelled reference).", ""]
    lines += _at_a_glance(view, ctx) + [""]
    lines += [line + "\n" for line in method_vs_no_kd(view)]
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


def _figures(view: RunView, out: Path, chance: float | None) -> list[tuple[str, str]]:
    """The PNG figures written to ``out``, each with its caption."""
    from relaxkd.report import figures as figs

    figures: list[tuple[str, str]] = []
    for name in figs.figure2(view, out, chance):
        figures.append((name, "Teacher (T_x) and student top-1 against the share of exact class names in T_x's text "
                              "(solid: the rest is wn text, dashed: the rest is noise); error bars: std over seeds."))
    for name in figs.figure3(view, out):
        figures.append((name, "Image vs text share of T_x's attribution (Integrated Gradients), per text mix."))
    for name in figs.history_figures(view, out, chance):
        figures.append((name, "Validation top-1 after each epoch, one figure per stage family."))
    return figures


def _num_classes(view: RunView) -> int | None:
    for model in view.models:
        if model.info.num_classes:
            return int(model.info.num_classes)
    return None


def _at_a_glance(view: RunView, ctx: dict[str, Any]) -> list[str]:
    sizes, prov = ctx["sizes"], view.provenance
    parts = [f"Dataset `{prov.dataset if prov else '?'}`"]
    if ctx["num_classes"]:
        parts.append(f"{ctx['num_classes']} classes")
    if sizes.get("num_train") is not None:
        parts.append(f"{sizes['num_train']:,} training / {sizes['num_val']:,} validation images")
    else:
        val = next((m.metrics.num_samples for m in view.models if m.metrics.num_samples), None)
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


def _has(view: RunView, key: str) -> bool:
    return any(isinstance(getattr(m.metrics, key), (int, float)) and not math.isnan(getattr(m.metrics, key)) for m in view.models)


_ORDER = {UNIMODAL: 0, MULTIMODAL: 1, STUDENT: 2}


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
    models = sorted(view.models, key=lambda m: (_ORDER.get(m.kind, 9), m.role, m.seed if isinstance(m.seed, int) else 0))
    for m in models:
        taught = ""
        if m.kind == MULTIMODAL:
            students = view.taught(m)
            taught = f"{len(students)} student(s)" if students else "none"
            if m.key == main_tx:
                taught = "★ taught the main run's student; " + taught
        uses = "; ".join(m.uses) or "–"
        row = [m.role, uses, m.seed, m.prov.epochs, m.top1] + ([m.metrics.top5] if top5 else [])
        row += [getattr(m.metrics, k) for k in shots] + [taught or "", m.key]
        t.add(*row)
    t.intro.append("Rows: T_m members, then T_x teachers (by text mix), then students (by teachers). "
                   "★ marks the T_x that taught the main run's student.")
    if not top5:
        t.notes.append(f"top-5 is not shown: with {ctx['num_classes']} classes it says little.")
    return t


def _attribution_table(view: RunView) -> Table | None:
    rows = []
    for art in view.other:
        result = read_json(art.path, "attribution.json")
        if not result:
            continue
        teacher = view.by_key.get((art.manifest.get("spec") or {}).get("teacher", ""))
        label = teacher.role if teacher else "T_x (artifact not in this run)"
        uses = "; ".join(teacher.uses) if teacher else ""
        rows.append((label, uses, result, art.key))
    if not rows:
        return None
    t = Table("Attribution (Integrated Gradients on T_x)", ["T_x", "used in", "image share", "text share", "samples", "artifact"],
              "attribution.csv")
    for label, uses, r, key in sorted(rows, key=lambda x: x[0]):
        t.add(label, uses or "–", fmt(r.get("image_share"), 3), fmt(r.get("text_share"), 3), r.get("num_samples"), key)
    return t


def _synset_table(sizes: dict[str, Any]) -> Table | None:
    classes, synsets = sizes.get("classes") or [], sizes.get("synsets") or []
    if not classes or len(classes) != len(synsets):
        return None
    glosses = sizes.get("glosses") or [None] * len(classes)
    senses = sizes.get("senses") or [None] * len(classes)
    chosen = [_chosen_by(sizes, i) for i in range(len(classes))]
    t = Table("Classes and their WordNet senses", ["class", "synset", "gloss", "noun senses of the name", "chosen by"],
              "class_synsets.csv")
    for name, synset, gloss, count, how in zip(classes, synsets, glosses, senses, chosen):
        t.add(name, synset, gloss or "–", count, how)
    t.intro.append("The sense decides the class's place in WordNet (neighbourhood candidates, hierarchy). A wrong sense "
                   "is fixed with a `class_name: synset.n.NN` line in the file named by `data.synset_overrides`.")
    return t


def _chosen_by(sizes: dict[str, Any], index: int) -> str:
    """How class ``index``'s sense was chosen (classes.json's sense_sources; older artifacts lack them)."""
    def at(key: str) -> Any:
        values = sizes.get(key) or []
        return values[index] if index < len(values) else None

    source = at("sense_sources")
    if source == "images":
        return f"its images (runner-up {at('sense_runner_up')}, cosine margin {at('sense_margin'):.3f})"
    return {"override": "your override", "wnid": "wnid", "built-in": "built-in override",
            "default": "the name (most likely pictured sense)", "first sense": "the name (first sense)"}.get(source, "–")


def _provenance(view: RunView, ctx: dict[str, Any]) -> list[str]:
    prov = view.provenance
    lines = []
    if prov is not None:
        lines.append(f"CLIP: {prov.clip}" + (" (random-weight CLIP: not the paper's)" if prov.random_weight_clip else ""))
        lines.append(f"dataset: {prov.dataset}" + (" (bundled demo data)" if prov.demo_data else ""))
    families = {UNIMODAL: "T_m members", MULTIMODAL: "T_x teachers", STUDENT: "students"}
    for kind, label in families.items():
        epochs = sorted({m.prov.epochs for m in view.models if m.kind == kind and m.prov.epochs})
        if epochs:
            archs = sorted({m.info.arch for m in view.models if m.kind == kind and m.info.arch})
            what = f" ({', '.join(archs)})" if archs else ""
            lines.append(f"{label}{what}: trained {', '.join(map(str, epochs))} epochs each")
    inits = sorted({m.prov.head_init["note"] for m in view.models
                    if m.kind == MULTIMODAL and m.prov.head_init and m.prov.head == "resnet50-1x1"})
    for note in inits:  # the authors start it from ImageNet weights: say when this run could not
        lines.append(f"T_x resnet50-1x1 head: {note}")
    losses = sorted({LOSS_NAMES.get(m.prov.loss, m.prov.loss) for m in view.models if m.kind == STUDENT and m.prov.loss})
    if losses:
        lines.append(f"student losses: {', '.join(losses)}")
    lines.append(f"seeds: {', '.join(map(str, view.seeds)) or '?'}")
    return lines
