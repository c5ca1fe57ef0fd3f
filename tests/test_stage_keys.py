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
# Issue 13 changed every key on purpose: the optimiser section gained the schedule fields (the
# authors' LambdaLR with absolute milestones, cosine), Cutout's hole length joined the views
# (data.cutout; AUGMENTATION_VERSION 4), word embeddings are averaged then normalised
# (word_embedding in embed-images and embed-nouns), k-means runs 300 x 10 by default, and the demo's
# T_x text mix is the paper's {wn: 1.0} (so the main run's T_x is table2's gt0-wn100 one).
DEMO_KEYS = {
    "run": [
        "attribute-93dbe8a9cd0f116c",
        "distill-64d46982581f5e32",  # distill.params (KD-method plug-ins) joined the distill section
        "embed-images-ff0672160c2c3aa3",
        "embed-nouns-d43bc8725c8673a5",
        "relax-961d60a9c2969876",  # k-means never fewer clusters than classes (min_clusters); downstream keys follow
        "teacher-multimodal-8ab05e9b6c963d9b",
        "teacher-unimodal-63d92fb96fdcbf86",  # T_m views drawn with the member's seed (views_seed)
        "teacher-unimodal-feecb7c33dbaca48",
    ],
    "distill.targets=cached": ["teacher-targets-bb78a85737230ce7"],
    "table2/gt100-wn0/tx-s": ["attribute-840481da28cbfe25", "teacher-multimodal-e349a9f270b755b4"],
    "table2/gt80-wn20/tx-s": ["attribute-27d632ec5b07939b", "teacher-multimodal-86a8ca81c55739d6"],
    "table2/gt50-wn50/tx-s": ["attribute-c75e67d67225a9df", "teacher-multimodal-df9dc034c4fa65c1"],
    "table2/gt20-wn80/tx-s": ["attribute-aecc40726d974e19", "teacher-multimodal-df479c71cf317afb"],
    "table2/gt0-wn100/tx-s": ["attribute-93dbe8a9cd0f116c", "teacher-multimodal-8ab05e9b6c963d9b"],
    "table2/gt80-noise20/tx-s": ["attribute-6970e431a0c626f6", "teacher-multimodal-bc64919e4c9e9d5e"],
    "table2/gt50-noise50/tx-s": ["attribute-3c68038606a586a0", "teacher-multimodal-07b0d8634d35dd9e"],
    "table2/gt20-noise80/tx-s": ["attribute-1956ec24f67abb79", "teacher-multimodal-6f6cd33c1122828b"],
    "table2/gt0-noise100/tx-s": ["attribute-016e2815f8065384", "teacher-multimodal-b1bff75c2079666e"],
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
