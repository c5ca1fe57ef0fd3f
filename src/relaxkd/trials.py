"""The paper's trial families (Tables 1-3, Figure 2) as config overrides on top of one experiment.

Plain data: a trial is a name, its overrides and the stages it needs (``stages.sweep`` runs them).
This module is the one definition of the family names (the config validates ``sweeps`` against it).
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from relaxkd.errors import UserError
from relaxkd.names import TX


@dataclass
class Trial:
    name: str
    #: config overrides; ``{distill.vit_student}`` is replaced by the base config's value
    overrides: list[str]
    #: what the trial needs beyond shared artifacts: "tx", "attribute", "distill"
    stages: tuple[str, ...]
    labels: dict[str, object] = field(default_factory=dict)
    #: what the data must be for the trial to apply: "long_tailed" (LFME); a sweep skips it otherwise
    requires: tuple[str, ...] = ()


#: the columns of the paper's Table 1: its six datasets, in the paper's order
TABLE1_DATASETS = ("cifar100", "cifar100_lt", "imagenet", "imagenet_lt", "scene", "utkface")
#: the rows of the paper's Table 1 as trial names, with the paper's labels
TABLE1_ROWS = {
    "lfme": "LFME", "dmae": "DMAE", "ffkd": "FFKD", "zscore-kd": "z-score KD", "ensemble-kd": "ensemble KD",
    "dkd": "DKD", "vanilla-kd": "vanilla KD", "no-kd": "no KD", "ours": "ours",
}
_PLACEHOLDER = re.compile(r"\{([a-z_]+(?:\.[a-z_]+)+)(?:\?([^{}]*))?\}")


def resolve_overrides(overrides: list[str], base: dict) -> list[str]:
    """Fill ``{section.key}`` placeholders with the base config's values (``{section.key?default}``:
    the default where the config does not set the key)."""

    def value(match: re.Match) -> str:
        node = base
        for part in match.group(1).split("."):
            if match.group(2) is not None and (not isinstance(node, dict) or part not in node):
                return match.group(2)
            node = node[part]
        return str(node)

    return [_PLACEHOLDER.sub(value, text) for text in overrides]


def _props(**proportions: float) -> str:
    body = ", ".join(f"{k}: {v:g}" for k, v in proportions.items() if v > 0)
    return f"multimodal.proportions={{{body}}}"


#: T_x as Tables 1 and 3 run it, the paper's best trial: T_x (img, 0 % gt, 100 % wn), learnable bank.
#: Pinned inside the trials, so a config's own text mix cannot change what "ours" means.
OURS_TX = [_props(wn=1.0), "multimodal.text_only=false"]


def table2_trials() -> list[Trial]:
    trials = []
    for other, gts in (("wn", (1.0, 0.8, 0.5, 0.2, 0.0)), ("noise", (0.8, 0.5, 0.2, 0.0))):
        for gt in gts:
            rest = round(1.0 - gt, 6)
            base = f"gt{int(gt * 100)}-{other}{int(rest * 100)}"
            props = _props(gt=gt, **{other: rest})
            labels = {"gt": gt, "other": other, "other_share": rest}
            pinned = [props, "multimodal.text_only=false", "multimodal.bank=learnable"]
            if other == "noise":  # the released code's label noise (multimodal.noise=text: text-only noise)
                pinned.append("multimodal.noise=label")
            trials.append(
                Trial(
                    f"{base}/tx-s",
                    [*pinned, f"distill.teachers=[{TX}]"],
                    (TX, "attribute", "distill"),
                    {**labels, "teachers": "T_x S_s"},
                )
            )
            trials.append(
                Trial(
                    f"{base}/tm-tx-s",
                    [*pinned, f"distill.teachers=[strong, weak, {TX}]"],
                    ("distill",),
                    {**labels, "teachers": "T_m T_x S_s"},
                )
            )
    return trials


def figure2_trials() -> list[Trial]:
    """Figure 2: a text-only T_x per wn share (the rest gt) and its student T_x S_s, both plotted."""
    return [
        Trial(
            f"text-only-wn{int(wn * 100)}",
            [
                _props(gt=round(1 - wn, 6), wn=wn),
                "multimodal.text_only=true",
                "multimodal.bank=learnable",
                f"distill.teachers=[{TX}]",
            ],
            (TX, "attribute", "distill"),
            {"wn": wn, "teachers": "T_x S_s"},
        )
        for wn in (0.0, 0.2, 0.5, 0.8, 1.0)
    ]


def table3_trials() -> list[Trial]:
    return [
        Trial(
            f"bank-{bank}",
            [*OURS_TX, f"multimodal.bank={bank}", f"distill.teachers=[strong, weak, {TX}]"],
            (TX, "attribute", "distill"),
            {"bank": bank},
        )
        for bank in ("fixed", "learnable")
    ]


#: DMAE's fine-tuning recipe (finetune.sh / main_finetune.py): AdamW, lr = blr 5e-4 · batch / 256,
#: weight decay 0.05, 100 epochs (distill.methods.dmae.finetune_epochs), 5 warm-up epochs then a half cosine to 1e-6; the method's
#: own
#: recipe (DMAEParams) adds layer decay, drop path, mixup/cutmix, random erasing, label smoothing
DMAE_FINETUNE = [
    "distill.optim.optimizer=adamw",
    "distill.optim.base_lr=0.0005",
    "distill.optim.weight_decay=0.05",
    "distill.optim.epochs={distill.methods.dmae.finetune_epochs?100}",
    "distill.optim.schedule=warmup_cosine",
    "distill.optim.milestones=[]",
    "distill.optim.warmup_epochs=5",
    "distill.optim.min_lr=0.000001",
]


def table1_trials() -> list[Trial]:
    methods = {
        "ours": [*OURS_TX, "multimodal.bank=learnable", f"distill.teachers=[strong, weak, {TX}]", "distill.loss=kd"],
        "ensemble-kd": ["distill.teachers=[strong, weak, strong2]", "distill.loss=kd"],
        "zscore-kd": ["distill.teachers=[strong, weak, strong2]", "distill.loss=zscore"],
        "dkd": ["distill.teachers=[strong]", "distill.loss=dkd"],
        "vanilla-kd": ["distill.teachers=[strong]", "distill.loss=kd"],
        "no-kd": ["distill.loss=none"],
        # the remaining baselines of the paper's Table 1 (relaxkd/methods: lfme.py, ffkd.py, dmae.py)
        # (FFKD refines its teacher and DMAE aligns features: neither can replay cached targets)
        "ffkd": ["distill.teachers=[strong]", "distill.loss=ffkd", "distill.targets=online"],
        # DMAE fine-tunes with its own recipe (DMAE_FINETUNE)
        "dmae": [
            "distill.teachers=[strong]",
            "distill.loss=dmae",
            "distill.student={distill.vit_student}",
            "distill.targets=online",
            *DMAE_FINETUNE,
        ],
        "lfme": ["distill.teachers=[expert_many, expert_medium, expert_few]", "distill.loss=lfme"],
    }
    requires = {"lfme": ("long_tailed",)}  # LFME is defined for long-tailed data only, as in its paper
    return [
        Trial(name, ov, ("distill",), {"method": name, "paper_row": TABLE1_ROWS[name]}, requires.get(name, ()))
        for name, ov in methods.items()
    ]


#: the family `relaxkd run` adds on data other than the paper's (``compare_no_kd``): the config's own
#: method and the no-KD student of the same recipe, per seed, so the report says what the teachers did
COMPARE = "compare"


def compare_trials() -> list[Trial]:
    return [
        Trial("method", [], ("distill",), {"method": "this config's distillation"}),
        Trial("no-kd", ["distill.loss=none"], ("distill",), {"method": "no KD", "paper_row": TABLE1_ROWS["no-kd"]}),
    ]


SWEEPS: dict[str, Callable[[], list[Trial]]] = {
    "table1": table1_trials,
    "table2": table2_trials,
    "table3": table3_trials,
    "figure2": figure2_trials,
    COMPARE: compare_trials,
}


def select_trials(family: str, names: str | None) -> list[Trial]:
    if family not in SWEEPS:
        raise UserError(f"unknown sweep family {family!r}; valid families: {', '.join(SWEEPS)}")
    trials = SWEEPS[family]()
    if names is None:
        return trials
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {t.name: t for t in trials}
    for name in wanted:
        if name not in known:
            raise UserError(f"unknown trial {name!r} in sweep {family}; valid trials: {', '.join(known)}")
    return [known[n] for n in wanted]


def sweep_commands(config: Path, overrides: list[str], family: str, names: str | None) -> list[str]:
    """One independent command per trial, for a cluster scheduler (artifacts are shared by hash)."""
    return [
        shlex.join(["relaxkd", "sweep", str(config), *overrides, "--family", family, "--trials", t.name])
        for t in select_trials(family, names)
    ]


def trials_markdown() -> str:
    """The trials table of docs/reproduction.md (tests/test_reproduction.py keeps the two equal):
    ``python -c "from relaxkd.trials import trials_markdown; print(trials_markdown())"``."""
    lines = ["| family | trial | overrides (pinned by the trial) | stages |", "|---|---|---|---|"]
    for family, make in SWEEPS.items():
        for trial in make():
            overrides = "<br>".join(f"`{o}`" for o in trial.overrides)
            lines.append(f"| {family} | `{trial.name}` | {overrides} | {', '.join(trial.stages)} |")
    return "\n".join(lines) + "\n"
