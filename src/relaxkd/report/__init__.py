"""Reports: Markdown and CSV tables laid out like the paper's, PNG figures, provenance per number."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from relaxkd.errors import UserError
from relaxkd.stages.artifacts import ArtifactStore, atomic_output

#: student top-1 (%) published in the paper (Table 1, "ours"), for real CLIP weights and data.
PAPER_STUDENT_TOP1 = {
    "cifar100": 83.33,
    "cifar100_lt": 52.58,
    "imagenet": 70.14,
    "imagenet_lt": 50.06,
    "scene": 93.07,
    "utkface": 86.71,
}


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def provenance_line(metrics: dict[str, Any]) -> str:
    prov = metrics.get("provenance", {})
    parts = [f"dataset {prov.get('dataset', '?')}", f"CLIP {prov.get('clip', '?')}", f"epochs {prov.get('epochs', '?')}", f"seed {prov.get('seed', '?')}"]
    caveats = []
    if prov.get("random_weight_clip"):
        caveats.append("random-weight CLIP")
    if prov.get("demo_data"):
        caveats.append("demo data")
    if caveats:
        parts.append(" / ".join(caveats) + ": not comparable with the paper")
    return "; ".join(parts)


class Table:
    def __init__(self, title: str, header: list[str]):
        self.title, self.header, self.rows = title, header, []
        self.notes: list[str] = []

    def add(self, *row: Any) -> None:
        self.rows.append([_fmt(v) for v in row])

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", "| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def write_csv(self, path: Path) -> None:
        with atomic_output(path) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(self.header)
            writer.writerows(self.rows)


def _read_json(directory: str | Path | None, name: str) -> dict[str, Any]:
    """A JSON file of an artifact directory, or {} when the trial has no such artifact."""
    if not directory:
        return {}
    try:
        return json.loads((Path(directory) / name).read_text())
    except (OSError, ValueError):
        return {}


def _metrics(directory: str | Path | None) -> dict[str, Any]:
    return _read_json(directory, "metrics.json")


def _attribution(directory: str | Path | None) -> dict[str, Any]:
    return _read_json(directory, "attribution.json")


def _sweep(run_dir: Path, family: str) -> dict[str, Any]:
    return _read_json(run_dir, f"sweep-{family}.json")


def write_report(run_dir: str | Path) -> Path:
    """Write ``<run_dir>/report/report.md`` (+ CSV tables and PNG figures); return its path."""
    run_dir = Path(run_dir)
    store = ArtifactStore(run_dir)
    artifacts = store.artifacts()
    if not artifacts:
        raise UserError(f"no results in {str(run_dir)!r}: run `relaxkd run CONFIG` first (or pass the run directory it printed)")
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    tables: list[Table] = []
    figures: list[str] = []
    provenance: set[str] = set()

    stage_table = Table("Trained models in this run", ["stage", "name", "top-1", "top-5", "many", "medium", "few", "artifact"])
    for art in artifacts:
        if art.stage not in ("teacher-unimodal", "teacher-multimodal", "distill"):
            continue
        m = _metrics(art.path)
        info = _read_json(art.path, "student.json" if art.stage == "distill" else "teacher.json")
        name = info.get("name") or info.get("arch") or info.get("kind", "")
        if art.stage == "teacher-multimodal":
            prov = m.get("provenance", {})
            name = "T_x " + ", ".join(f"{k} {v:g}" for k, v in prov.get("proportions", {}).items())
            name += " (text only)" if prov.get("text_only") else ""
            name += f" [{prov.get('bank', '')} bank]"
        elif art.stage == "distill":
            prov = m.get("provenance", {})
            name = f"{info.get('arch', 'student')} ← {', '.join(prov.get('teachers', [])) or 'no teacher'} ({prov.get('loss', '')})"
        stage_table.add(art.stage, name, m.get("top1"), m.get("top5"), m.get("many_shot"), m.get("medium_shot"), m.get("few_shot"), art.path.name)
        provenance.add(provenance_line({**m, "provenance": {**m.get("provenance", {})}}))
    tables.append(stage_table)

    attribution_rows = [(a.path.name, a.read_json("attribution.json")) for a in store.artifacts("attribute")]
    if attribution_rows:
        t = Table("Attribution (Integrated Gradients on T_x)", ["artifact", "image share", "text share", "samples"])
        for name, r in attribution_rows:
            t.add(name, r["image_share"], r["text_share"], r["num_samples"])
        tables.append(t)

    dataset = _dataset_of(artifacts)
    tables += _table1(run_dir, dataset)
    t2, figs = _table2(run_dir, out)
    tables += t2
    figures += figs
    tables += _table3(run_dir)
    f2 = _figure2(run_dir, out)
    figures += f2
    figures += _history_figure(artifacts, out)

    lines = [f"# relaxkd report: {run_dir.name}", ""]
    caveat = any(("random-weight CLIP" in p or "demo data" in p) for p in provenance)
    if caveat:
        lines += ["> **These numbers come from random-weight models and/or the tiny demo data. They exercise the real "
                  "pipeline but are not comparable with the paper's results.**", ""]
    lines += ["Provenance of the numbers below:", ""] + [f"- {p}" for p in sorted(provenance)] + [""]
    for i, table in enumerate(tables):
        lines.append(table.markdown())
        csv_name = f"table{i}_" + "".join(c if c.isalnum() else "_" for c in table.title.lower())[:40] + ".csv"
        table.write_csv(out / csv_name)
    if figures:
        lines += ["## Figures", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in figures]
    report = out / "report.md"
    with atomic_output(report) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return report


def _dataset_of(artifacts) -> str | None:
    for art in artifacts:
        prov = _metrics(art.path).get("provenance", {})
        if prov.get("dataset"):
            return prov["dataset"]
    return None


def _table1(run_dir: Path, dataset: str | None) -> list[Table]:
    record = _sweep(run_dir, "table1")
    if not record:
        return []
    t = Table("Table 1: student top-1 by distillation method", ["method", "student top-1", "top-5", "paper (ours)"])
    for name, trial in record.items():
        m = _metrics(trial["artifacts"].get("distill"))
        prov = m.get("provenance", {})
        comparable = not prov.get("random_weight_clip") and not prov.get("demo_data")
        paper = PAPER_STUDENT_TOP1.get(dataset or "") if (name == "ours" and comparable) else None
        t.add(name, m.get("top1"), m.get("top5"), paper)
    t.notes.append("paper column: published student top-1 for the same dataset, shown only for real weights and data")
    return [t]


def _table2(run_dir: Path, out: Path) -> tuple[list[Table], list[str]]:
    record = _sweep(run_dir, "table2")
    if not record:
        return [], []
    rows: dict[tuple, dict[str, Any]] = {}
    for name, trial in record.items():
        labels = trial["labels"]
        key = (labels["gt"], labels["other"], labels["other_share"])
        row = rows.setdefault(key, {})
        if "tx" in trial["artifacts"]:
            row["tx"] = _metrics(trial["artifacts"]["tx"]).get("top1")
        if "attribute" in trial["artifacts"]:
            row["image_share"] = _attribution(trial["artifacts"]["attribute"]).get("image_share")
        row[labels["teachers"]] = _metrics(trial["artifacts"].get("distill")).get("top1")
    t = Table(
        "Table 2: T_x text proportions (img + gt/wn and img + gt/noise)",
        ["gt %", "other", "other %", "T_x top-1", "T_x S_s top-1", "T_m T_x S_s top-1", "T_x image share"],
    )
    ordered = sorted(rows.items(), key=lambda kv: (kv[0][1] != "wn", -kv[0][0]))
    for (gt, other, share), row in ordered:
        t.add(round(gt * 100), other, round(share * 100), row.get("tx"), row.get("T_x S_s"), row.get("T_m T_x S_s"), row.get("image_share"))
    if not any(row.get(k) is not None for _, row in ordered for k in ("T_x S_s", "T_m T_x S_s")):
        t.notes.append("students were not trained in this sweep (sweep_students=false); "
                       "`relaxkd sweep CONFIG --family table2 sweep_students=true` trains them")
    figures = _plot_table2(ordered, out)
    return [t], figures


def _plot_table2(ordered, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for other, marker in (("wn", "o"), ("noise", "s")):
        pts = sorted((gt, row) for (gt, o, _), row in ordered if o == other)
        if not pts:
            continue
        xs = [100 * gt for gt, _ in pts]
        for key, style in (("tx", "-"), ("T_x S_s", "--"), ("T_m T_x S_s", ":")):
            ys = [row.get(key) for _, row in pts]
            if any(y is not None for y in ys):
                axes[0].plot(xs, [float("nan") if y is None else y for y in ys], style, marker=marker, label=f"{key} (gt + {other})")
        shares = [row.get("image_share") for _, row in pts]
        axes[1].plot(xs, [float("nan") if s is None else s for s in shares], marker=marker, label=f"image share (gt + {other})")
    axes[0].set(xlabel="gt text %", ylabel="top-1 %", title="Teacher and student accuracy")
    axes[1].set(xlabel="gt text %", ylabel="image attribution share", title="Integrated Gradients on T_x", ylim=(0, 1))
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "table2_accuracy_attribution.png"
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return [str(path)]


def _table3(run_dir: Path) -> list[Table]:
    record = _sweep(run_dir, "table3")
    if not record:
        return []
    t = Table("Table 3: fixed (n_pretrained) vs learnable relaxed bank", ["bank", "T_x top-1", "student top-1", "T_x image share"])
    for name, trial in record.items():
        a = trial["artifacts"]
        t.add(trial["labels"]["bank"], _metrics(a.get("tx")).get("top1"), _metrics(a.get("distill")).get("top1"), _attribution(a.get("attribute")).get("image_share"))
    return [t]


def _figure2(run_dir: Path, out: Path) -> list[str]:
    record = _sweep(run_dir, "figure2")
    if not record:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted((trial["labels"]["wn"], _metrics(trial["artifacts"].get("tx")).get("top1")) for trial in record.values())
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([100 * x for x, _ in pts], [float("nan") if y is None else y for _, y in pts], marker="o")
    ax.set(xlabel="wn text % (rest gt)", ylabel="text-only T_x top-1 %", title="Figure 2: text-only teacher")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "figure2_text_only.png"
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return [str(path)]


def _history_figure(artifacts, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    for art in artifacts:
        if art.stage in ("teacher-unimodal", "teacher-multimodal", "distill"):
            history = _metrics(art.path).get("history", [])
            if history:
                curves.append((f"{art.stage} {art.key[:6]}", [h["epoch"] for h in history], [h["top1"] for h in history]))
    if not curves:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, xs, ys in curves[:12]:
        ax.plot(xs, ys, label=label)
    ax.set(xlabel="epoch", ylabel="validation top-1 %", title="Validation accuracy per epoch")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "validation_history.png"
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return [str(path)]
