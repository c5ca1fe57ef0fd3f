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
        "attribute-f3a820d6bb82d5ee",
        "distill-b55b7e21a0e8b1fb",  # distill.params (KD-method plug-ins) joined the distill section
        "embed-images-2b4c9b7abd266e44",
        "embed-nouns-25a751e366a2f770",
        "relax-c6bd987fb4f9f147",  # k-means never fewer clusters than classes (min_clusters); downstream keys follow
        "teacher-multimodal-3e75ccf329ab8aaa",
        "teacher-unimodal-a78fecbf60f00144",  # T_m views drawn with the member's seed (views_seed)
        "teacher-unimodal-e5400c0029ea3d86",
    ],
    "distill.targets=cached": ["teacher-targets-ff112da1a7f3af76"],
    "table2/gt100-wn0/tx-s": ["attribute-7ab5852fd29e5002", "teacher-multimodal-9771d8c3aaccb862"],
    "table2/gt80-wn20/tx-s": ["attribute-35954a64d9c82bda", "teacher-multimodal-e6356b36f9143817"],
    "table2/gt50-wn50/tx-s": ["attribute-ec2245997f34517e", "teacher-multimodal-19ec299b7fd1d0d2"],
    "table2/gt20-wn80/tx-s": ["attribute-f3a820d6bb82d5ee", "teacher-multimodal-3e75ccf329ab8aaa"],
    "table2/gt0-wn100/tx-s": ["attribute-eb32fb40b0f64be2", "teacher-multimodal-7bb56da01bb8c7dc"],
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
