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
# Issue 25 changed every trained stage's key on purpose: each epoch now trains at the authors'
# effective rate (their scheduler stepped before each epoch: formula at e + 1; train_spec's
# "schedule": engine.optim.SCHEDULE_VERSION), so artifacts trained on the old rates are not reused.
# A change that alters a key on purpose updates this list in its commit and says why here.
DEMO_KEYS = {
    "run": [
        "attribute-99082bac54405e9a",
        "distill-b07d259239ce66e6",
        "embed-images-ff0672160c2c3aa3",
        "embed-nouns-d43bc8725c8673a5",
        "relax-961d60a9c2969876",  # k-means never fewer clusters than classes (min_clusters); downstream keys follow
        "teacher-multimodal-38d56242eb331d9d",
        "teacher-unimodal-e4bbdb9788b382c0",
        "teacher-unimodal-eab8b52f7cd95783",
    ],
    "distill.targets=cached": ["teacher-targets-9a6ee750d6d147e8"],
    "table2/gt100-wn0/tx-s": ["attribute-3328f9d53f6a7fa2", "teacher-multimodal-66839e635627eee2"],
    "table2/gt80-wn20/tx-s": ["attribute-0a31881ccc91b17b", "teacher-multimodal-cca3372079d12d21"],
    "table2/gt50-wn50/tx-s": ["attribute-1975e5864683c509", "teacher-multimodal-1d5efc28efe73415"],
    "table2/gt20-wn80/tx-s": ["attribute-9c986599b537afdc", "teacher-multimodal-335f8ee4321f103d"],
    "table2/gt0-wn100/tx-s": ["attribute-99082bac54405e9a", "teacher-multimodal-38d56242eb331d9d"],
    "table2/gt80-noise20/tx-s": ["attribute-314a34f93f334d7e", "teacher-multimodal-37d35b071eebc74c"],
    "table2/gt50-noise50/tx-s": ["attribute-2b288011b792ac26", "teacher-multimodal-82490fe6dcf02529"],
    "table2/gt20-noise80/tx-s": ["attribute-2b0e07b2adbe48c2", "teacher-multimodal-e40ea0600cb11174"],
    "table2/gt0-noise100/tx-s": ["attribute-f415af36ec9958c6", "teacher-multimodal-cfc6729400d80d68"],
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
