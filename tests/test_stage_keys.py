"""The demo's artifact keys, listed: a refactoring keeps every key (and so every cached artifact).

Keys are computed without building anything: each stage's resolve is replaced by one that returns
an artifact named by the key its spec hashes to. A change that alters a key on purpose (a fix that
changes what an artifact holds) updates the list below in the same commit and says why.
"""
from __future__ import annotations

import pytest

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
# Issue 15 changed teacher-multimodal and what follows on purpose: the retrieval temperature moved
# from ``relax`` to ``multimodal`` (only T_x reads it; the relax key is what Algorithm 1 reads), and
# online T_x's CLIP input has one resize path (``clip.online.RESIZE`` in distill and teacher-targets).
# A change that alters a key on purpose updates this list in its commit and says why here.
DEMO_KEYS = {
    "run": [
        "attribute-36eaf987a1dea1a2",
        "distill-c1c670df8c32d15d",  # distill.params (KD-method plug-ins) joined the distill section
        "embed-images-ff0672160c2c3aa3",
        "embed-nouns-d43bc8725c8673a5",
        "relax-961d60a9c2969876",  # k-means never fewer clusters than classes (min_clusters); downstream keys follow
        "teacher-multimodal-62129bc86cf9bd55",
        "teacher-unimodal-63d92fb96fdcbf86",  # T_m views drawn with the member's seed (views_seed)
        "teacher-unimodal-feecb7c33dbaca48",
    ],
    "distill.targets=cached": ["teacher-targets-5a63b421022411f4"],
    "table2/gt100-wn0/tx-s": ["attribute-8ad5745b6644cf3f", "teacher-multimodal-39640e50b103b6b3"],
    "table2/gt80-wn20/tx-s": ["attribute-7ca709d4b73c41c4", "teacher-multimodal-91804e772a422eb5"],
    "table2/gt50-wn50/tx-s": ["attribute-44c6968897e277f5", "teacher-multimodal-249b2d710d85fe56"],
    "table2/gt20-wn80/tx-s": ["attribute-63a9048a9d1c32a0", "teacher-multimodal-beb12b79abbd91ac"],
    "table2/gt0-wn100/tx-s": ["attribute-36eaf987a1dea1a2", "teacher-multimodal-62129bc86cf9bd55"],
    "table2/gt80-noise20/tx-s": ["attribute-37dbe04b32f7a987", "teacher-multimodal-14b42fcd3794923e"],
    "table2/gt50-noise50/tx-s": ["attribute-683d6172c349cee2", "teacher-multimodal-9583e0bf249f2ccd"],
    "table2/gt20-noise80/tx-s": ["attribute-63d85ed3fbf8168e", "teacher-multimodal-cbdc2b5d41ab760f"],
    "table2/gt0-noise100/tx-s": ["attribute-4cae6895fe5c9f73", "teacher-multimodal-c430667ecd320029"],
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
    assert demo_keys(tmp_path, monkeypatch) == DEMO_KEYS, (
        "a demo artifact key changed: if on purpose, paste the list `python tests/test_stage_keys.py` "
        "prints into DEMO_KEYS and say why in its comment"
    )


if __name__ == "__main__":  # prints the current keys, in DEMO_KEYS's layout
    import json
    import sys
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        keys = demo_keys(Path(tmp), mp)
    print("DEMO_KEYS = {")
    for label, listed in keys.items():
        if len(listed) > 2:
            print(f'    "{label}": [\n' + "".join(f'        "{k}",\n' for k in listed) + "    ],")
        else:
            print(f'    "{label}": {json.dumps(listed)},')
    print("}")
