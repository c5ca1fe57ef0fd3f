"""The report's first question on one's own data: did the teachers help? The method's student against
the no-KD student of the same recipe, paired by seed (the ``compare`` sweep of `relaxkd run`, else
Table 1's ``ours`` and ``no-kd`` trials)."""
from __future__ import annotations

from relaxkd.report.collect import RunView, fmt_mean_std, mean_std
from relaxkd.trials import COMPARE

#: (family, the method's trial) whose students are compared with that family's ``no-kd`` trial
_PAIRS = ((COMPARE, "method"), ("table1", "ours"))


def method_vs_no_kd(view: RunView) -> list[str]:
    """The headline lines: how much the method moved top-1 over the no-KD student (± over seeds when
    several), and the sweep that gives the full Table 1 comparison; empty without both students."""
    for family, name in _PAIRS:
        trials = {t.name: t for t in view.trials.get(family, [])}
        if name not in trials or "no-kd" not in trials:
            continue
        method, plain = trials[name].values(view, "distill"), trials["no-kd"].values(view, "distill")
        seeds = sorted(set(method) & set(plain))
        if not seeds:
            continue
        diffs = [method[s] - plain[s] for s in seeds]
        mean, std = mean_std(diffs)
        spread = f" ± {std:.1f}" if std is not None else ""
        over = f"mean ± std over {len(seeds)} seeds, paired by seed" if len(seeds) > 1 else "1 seed"
        what = "the distilled student (this config's teachers and KD loss)" if family == COMPARE else "Table 1's ours"
        lines = [(
            f"**Did the teachers help?** On this data {what} moved top-1 by **{mean:+.1f}{spread} points** against "
            f"the no-KD student of the same recipe ({over}): {_top1([method[s] for s in seeds])} vs "
            f"{_top1([plain[s] for s in seeds])} % top-1."
        )]
        if "table1" not in view.trials:
            lines.append("The full Table 1 comparison (ensemble, z-score, DKD, vanilla KD, FFKD, DMAE, LFME and ours "
                         "on the same student): `relaxkd sweep CONFIG --family table1`.")
        return lines
    return []


def _top1(values: list[float]) -> str:
    return fmt_mean_std(values) if len(values) > 1 else f"{values[0]:.1f}"
