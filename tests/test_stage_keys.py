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
        "attribute-178d1abfddb571a1",
        "distill-6db421ede19996de",  # distill.params (KD-method plug-ins) joined the distill section
        "embed-images-2b4c9b7abd266e44",
        "embed-nouns-25a751e366a2f770",
        "relax-a2f3a113059cd5a0",  # k-means never fewer clusters than classes (min_clusters); downstream keys follow
        "teacher-multimodal-34b81e9d61ec8be8",
        "teacher-unimodal-1ab2c8db9c2d7168",  # T_m views drawn with the member's seed (views_seed)
        "teacher-unimodal-622b0c7d6f414c20",
    ],
    "distill.targets=cached": ["teacher-targets-20213c58ab484bb9"],
    "table2/gt100-wn0/tx-s": ["attribute-985a1c4b90d28171", "teacher-multimodal-093a5952b9404c2d"],
    "table2/gt80-wn20/tx-s": ["attribute-69812cb96749a303", "teacher-multimodal-7ea84e17e270fb11"],
    "table2/gt50-wn50/tx-s": ["attribute-23a6f2dd0e1f250e", "teacher-multimodal-4917c042d7b9cd5c"],
    "table2/gt20-wn80/tx-s": ["attribute-69dc3e5c3364978f", "teacher-multimodal-c40c26f4baf121bc"],
    "table2/gt0-wn100/tx-s": ["attribute-178d1abfddb571a1", "teacher-multimodal-34b81e9d61ec8be8"],
    "table2/gt80-noise20/tx-s": ["attribute-168cd2c9f2edbbb6", "teacher-multimodal-fc22741881010ea2"],
    "table2/gt50-noise50/tx-s": ["attribute-9c7238377a5018ee", "teacher-multimodal-69970e80d42ec12f"],
    "table2/gt20-noise80/tx-s": ["attribute-7b2d6d83c2d79c88", "teacher-multimodal-ca40e98e71cd4128"],
    "table2/gt0-noise100/tx-s": ["attribute-2752b7f13de5a51f", "teacher-multimodal-508d8d900f35693b"],
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
