"""The report's PNG figures: like the paper's Figures 2 and 3, and one validation history per stage family."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from relaxkd.names import TX
from relaxkd.report.collect import MULTIMODAL, STUDENT, UNIMODAL, Model, RunView, mean_std, mix_label, teachers_label


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    from relaxkd.artifacts import atomic_output

    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight")
    _plt().close(fig)
    return path.name


def _chance(ax, chance: float | None) -> None:
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label=f"chance ({chance:.1f} %)")


def _styles(n: int):
    """n distinct (colour, line style) pairs: ten colours, then the same colours dashed, dotted..."""
    plt = _plt()
    colours = plt.get_cmap("tab10").colors
    styles = ["-", "--", ":", "-."]
    return [(colours[i % 10], styles[(i // 10) % 4]) for i in range(n)]


def mix_series(view: RunView) -> dict[str, list[tuple[float, dict[str, Any]]]]:
    """Table 2 trials as series ``wn``/``noise``: (gt share, {what: {seed: value}}) sorted by gt share."""
    series: dict[str, dict[float, dict[str, Any]]] = {}
    for trial in view.trials.get("table2", []):
        labels = trial.labels
        if "gt" not in labels:
            continue
        row = series.setdefault(labels.get("other", "wn"), {}).setdefault(float(labels["gt"]), {})
        if trial.values(view, TX):
            row[TX] = trial.values(view, TX)
            row["share"] = trial.shares(view)
        students = trial.values(view, "distill")
        if students:
            row[labels.get("teachers", trial.name)] = students
    return {other: sorted(points.items()) for other, points in series.items()}


def figure2(view: RunView, out: Path, chance: float | None) -> list[str]:
    """Teacher and student top-1 against the share of exact class names in T_x's text (paper's Figure 2)."""
    series = mix_series(view)
    text_only, text_only_students = [], []
    for trial in view.trials.get("figure2", []):
        if "wn" not in trial.labels:
            continue
        gt_share = 100 * (1 - float(trial.labels["wn"]))
        values, students = trial.values(view, TX), trial.values(view, "distill")
        if values:
            text_only.append((gt_share, values))
        if students:
            text_only_students.append((gt_share, students))
    if not series and not text_only and not text_only_students:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    lines = [
        (TX, "T_x (teacher)", "o"),
        ("T_x S_s", "student of T_x alone (T_x S_s)", "s"),
        ("T_m T_x S_s", "student of T_m + T_x (T_m T_x S_s)", "^"),
    ]
    colours = dict(zip([k for k, _, _ in lines], _styles(3)))
    for other, points in sorted(series.items(), key=lambda kv: kv[0] != "wn"):
        linestyle = "-" if other == "wn" else "--"
        for what, label, marker in lines:
            xs, ys, es = [], [], []
            for gt, row in points:
                if what in row:
                    mean, std = mean_std(list(row[what].values()))
                    xs.append(100 * gt)
                    ys.append(mean)
                    es.append(std or 0.0)
            if xs:
                ax.errorbar(xs, ys, yerr=es if any(es) else None, marker=marker, linestyle=linestyle, color=colours[what][0],
                            capsize=3, label=f"{label}, rest {other}")
    if text_only:
        text_only.sort()
        ys = [mean_std(list(v.values()))[0] for _, v in text_only]
        ax.plot([x for x, _ in text_only], ys, marker="d", color="tab:purple", linestyle="-.", label="text-only T_x, rest wn")
    if text_only_students:
        text_only_students.sort()
        ys = [mean_std(list(v.values()))[0] for _, v in text_only_students]
        ax.plot([x for x, _ in text_only_students], ys, marker="v", color="tab:pink", linestyle=":",
                label="student of the text-only T_x (T_x S_s), rest wn")
    _chance(ax, chance)
    ax.set(xlabel="share of samples whose T_x text is the exact class name (gt, %)", ylabel="validation top-1 (%)",
           title="Figure 2 (in small): teacher vs student accuracy by T_x text mix")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return [_save(fig, out / "figure2_teacher_student_by_text_mix.png")]


def figure3(view: RunView, out: Path) -> list[str]:
    """Image vs text attribution shares of every T_x with an attribution (paper's Figure 3)."""
    rows = []
    for _family, trials in view.trials.items():
        for trial in trials:
            shares = trial.shares(view)
            tx = trial.models(view, TX)
            if shares and tx:
                model = next(iter(tx.values()))
                label = mix_label(model.prov.proportions, bool(model.prov.text_only))
                if model.prov.bank == "fixed":
                    label += ", fixed bank"
                rows.append((label, list(shares.values())))
    if not rows:
        return []
    merged: dict[str, list[float]] = {}
    for label, values in rows:
        merged.setdefault(label, []).extend(values)
    labels = sorted(merged, key=lambda s: (("noise" in s), -_gt_share(s), s))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(labels) + 1.5))
    image = [mean_std(merged[label])[0] for label in labels]
    ax.barh(labels, image, color="tab:blue", label="image share")
    ax.barh(labels, [1 - v for v in image], left=image, color="tab:orange", label="text share")
    ax.axvline(0.5, color="grey", linestyle=":", linewidth=1, label="equal shares (the halves have the same size)")
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="share of |Integrated Gradients| attribution on T_x's input", ylabel="T_x text mix",
           title="Figure 3 (in small): what T_x looks at")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return [_save(fig, out / "figure3_attribution_shares.png")]


def _gt_share(label: str) -> float:
    for part in label.split(" / "):
        if part.startswith("gt "):
            return float(part.split()[1])
    return 0.0


FAMILIES = (
    (UNIMODAL, "image teachers T_m", "validation_history_teachers_tm.png"),
    (MULTIMODAL, "multimodal teachers T_x", "validation_history_teachers_tx.png"),
    (STUDENT, "students S_s", "validation_history_students.png"),
)


def _curve_label(model: Model) -> str:
    """A student's or T_x's curve label: its trial (seeds merged) or its role."""
    # a sweep trial names the curve (its seeds are averaged); "main run" only when no trial uses the model
    trials = sorted({u.split(" (seed")[0] for u in model.uses}, key=lambda u: (u == "main run", u))
    if model.kind == STUDENT:
        who = teachers_label(model.prov.teachers or [], model.prov.loss)
        return f"{trials[0]}: {who}" if trials else who
    return model.role


def history_figures(view: RunView, out: Path, chance: float | None, max_lines: int = 14) -> list[str]:
    """One figure per stage family; curves of the same trial over several seeds are averaged."""
    figures = []
    plt = _plt()
    for kind, title, filename in FAMILIES:
        groups: dict[str, list[list[tuple[int, float]]]] = {}
        for model in view.models:
            if model.kind != kind:
                continue
            history = model.metrics.history
            if history:
                groups.setdefault(_curve_label(model), []).append([(h["epoch"] + 1, h["top1"]) for h in history])
        if not groups:
            continue
        names = sorted(groups)[:max_lines]
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        for (colour, style), name in zip(_styles(len(names)), names):
            curves = groups[name]
            epochs = sorted({e for c in curves for e, _ in c})
            means = [mean_std([dict(c)[e] for c in curves if e in dict(c)])[0] for e in epochs]
            seeds = f" (mean of {len(curves)} seeds)" if len(curves) > 1 else ""
            ax.plot(epochs, means, color=colour, linestyle=style, label=name + seeds)
        _chance(ax, chance)
        shown = "" if len(groups) <= max_lines else f" (first {max_lines} of {len(groups)})"
        ax.set(xlabel="epoch", ylabel="validation top-1 (%)", title=f"Validation accuracy per epoch: {title}{shown}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        figures.append(_save(fig, out / filename))
    return figures
