"""The demo's artifact keys, listed: a refactoring keeps every key (and so every cached artifact).

Keys are computed without building anything: each stage's resolve is replaced by one that returns
an artifact named by the key its spec hashes to. A change that alters a key on purpose (a fix that
changes what an artifact holds) updates the list below in the same commit and says why.
"""
from __future__ import annotations

from relaxkd.config import apply_overrides, build_config, load_config
from relaxkd.artifacts import Artifact
from relaxkd.stages.context import Context
from relaxkd.stages.plan import TRIAL_STAGES, pipeline_stages
from relaxkd.stages.targets import teacher_targets
from relaxkd.trials import table2_trials

from conftest import REPO

#: ``configs/demo.yaml``'s artifacts: the main run, its Table 2 trials and a cached-targets distillation
DEMO_KEYS = {
    "run": [
        "attribute-6e43dfd4b5929b90",
        "distill-bf8ff98a68993320",  # distill.params (KD-method plug-ins) joined the distill section
        "embed-images-2b4c9b7abd266e44",
        "embed-nouns-25a751e366a2f770",
        "relax-5753f807799e5dd1",
        "teacher-multimodal-f590ae43a22b53d3",
        "teacher-unimodal-3544a2209f472df5",
        "teacher-unimodal-c09fbdd5273b20c0",
    ],
    "distill.targets=cached": ["teacher-targets-9eb8d4aa21f21568"],
    "table2/gt100-wn0/tx-s": ["attribute-7ab5852fd29e5002", "teacher-multimodal-9771d8c3aaccb862"],
    "table2/gt80-wn20/tx-s": ["attribute-91ad48d900726a1a", "teacher-multimodal-d97f7c77fe02c64a"],
    "table2/gt50-wn50/tx-s": ["attribute-0af1c07a4a9abf49", "teacher-multimodal-ed61a397aa0296d9"],
    "table2/gt20-wn80/tx-s": ["attribute-6e43dfd4b5929b90", "teacher-multimodal-f590ae43a22b53d3"],
    "table2/gt0-wn100/tx-s": ["attribute-cdf0948be56d8cbd", "teacher-multimodal-7eecd787ee7d3df1"],
    "table2/gt80-noise20/tx-s": ["attribute-38461b766de65e65", "teacher-multimodal-b3f01b8fa0349a40"],
    "table2/gt50-noise50/tx-s": ["attribute-40c11e23ae1107a2", "teacher-multimodal-c85833106fb82609"],
    "table2/gt20-noise80/tx-s": ["attribute-d8544169a55d7cb4", "teacher-multimodal-06933cc1188a94ce"],
    "table2/gt0-noise100/tx-s": ["attribute-c643fbab9e71cf52", "teacher-multimodal-9d0fbbf14b89ccd7"],
}


def demo_keys(tmp_path, monkeypatch) -> dict[str, list[str]]:
    built: dict[str, set[str]] = {}
    current: list[str] = []
    wanted = [set()]  # the stages a variant adds (the main run lists all)

    def keyed(self, store, stage, spec, build):
        key = store.key(stage, spec)
        if stage in wanted[0]:
            built.setdefault(current[0], set()).add(f"{stage}-{key}")
        return Artifact(stage, key, store.path(stage, key), {})

    monkeypatch.setattr(Context, "resolve", keyed)
    # keys never depend on where the stores are
    cfg = load_config(REPO / "configs" / "demo.yaml", [f"run_root={tmp_path}", f"cache_root={tmp_path / '_shared'}"])
    ctx = Context(cfg)
    current[:], wanted[:] = ["run"], [{a for a in ("embed-images", "embed-nouns", "relax", "teacher-unimodal",
                                                    "teacher-multimodal", "attribute", "distill")}]
    for _, stage in pipeline_stages(cfg):
        stage(ctx)
    current[:], wanted[:] = ["distill.targets=cached"], [{"teacher-targets"}]
    teacher_targets(ctx.derive(build_config(apply_overrides(cfg.to_dict(), ["distill.targets=cached"]))))
    for trial in table2_trials():
        current[:], wanted[:] = [f"table2/{trial.name}"], [{"teacher-multimodal", "attribute"}]
        trial_ctx = ctx.derive(build_config(apply_overrides(cfg.to_dict(), trial.overrides)))
        for name in [s for s in TRIAL_STAGES if s in trial.stages and s != "distill"]:  # the demo: sweep_students=false
            TRIAL_STAGES[name](trial_ctx)
    return {label: sorted(keys) for label, keys in built.items()}


def test_the_demo_keeps_its_artifact_keys(tmp_path, monkeypatch):
    assert demo_keys(tmp_path, monkeypatch) == DEMO_KEYS
