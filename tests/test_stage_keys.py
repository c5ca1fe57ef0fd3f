"""The demo's artifact keys, listed: a refactoring keeps every key (and so every cached artifact).

Keys are computed without building anything: the plan's graph hashes each node's spec from its
inputs' keys (``plan.graph``, ``graph.planned``). A change that alters a key on purpose (a fix that
changes what an artifact holds) updates the list below in the same commit and says why.
"""
from __future__ import annotations

from relaxkd.config import apply_overrides, build_config, load_config
from relaxkd.stages import attribute, distill, multimodal, targets
from relaxkd.stages.context import Context
from relaxkd.stages.graph import closure, planned
from relaxkd.stages.plan import graph, trial_nodes
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
# Issue 22 changed embed-images, embed-nouns and everything downstream (relax, teacher-multimodal,
# attribute, distill, teacher-targets) on purpose: CLIP's text tower now runs each batch at its own
# token length instead of the full context (clip/text_length.py). The word embeddings equal the old
# ones up to float rounding (~1e-7) but not bit for bit, so ``WORD_EMBEDDING`` says so in both keys.
# Issue 25 re-keyed Table 2's noise T_x on purpose: their noise is the released code's label noise
# (multimodal.noise=label, in their dumps; T_x without noise samples leave it out and keep their keys).
# Issue 25 re-keyed the T_x mixing wn with other text on purpose: a batch without wn text no longer
# moves the bank (no regulariser, no step; "bank_idle_without_wn" in their spec).
# A change that alters a key on purpose updates this list in its commit and says why here.
DEMO_KEYS = {
    "run": [
        "attribute-aa7db4554ba885a7",
        "distill-904b45a00edfd5f1",
        "embed-images-b57e539e061768ca",
        "embed-nouns-248a72b9c90afa24",
        "relax-ec2fb04379ef60d6",  # k-means never fewer clusters than classes (min_clusters); downstream keys follow
        "teacher-multimodal-a1a2bf3bac0b230e",
        "teacher-unimodal-e4bbdb9788b382c0",
        "teacher-unimodal-eab8b52f7cd95783",
    ],
    "distill.targets=cached": ["teacher-targets-88f60873521f85cf"],
    "table2/gt100-wn0/tx-s": ["attribute-81883c45eec8612e", "teacher-multimodal-619a0c38bc166bd1"],
    "table2/gt80-wn20/tx-s": ["attribute-f3742ee75b8f5154", "teacher-multimodal-67df244bd12a2dab"],
    "table2/gt50-wn50/tx-s": ["attribute-8394790693183811", "teacher-multimodal-9f9fe0e5889e62ed"],
    "table2/gt20-wn80/tx-s": ["attribute-3b107b68d0f3ba93", "teacher-multimodal-8509728720729773"],
    "table2/gt0-wn100/tx-s": ["attribute-aa7db4554ba885a7", "teacher-multimodal-a1a2bf3bac0b230e"],
    "table2/gt80-noise20/tx-s": ["attribute-0484facda84bf08d", "teacher-multimodal-5a8bad4870c2fa62"],
    "table2/gt50-noise50/tx-s": ["attribute-cbf35b4b3faffac8", "teacher-multimodal-56e743ba3bd097eb"],
    "table2/gt20-noise80/tx-s": ["attribute-21d8ec1df7888f65", "teacher-multimodal-8c53fe26d0291390"],
    "table2/gt0-noise100/tx-s": ["attribute-4a109a10efb18be2", "teacher-multimodal-9c869c6f85b48e6e"],
}


def demo_keys(tmp_path) -> dict[str, list[str]]:
    """Keys from the plan's graph (stages/graph.py): computed from the specs alone, nothing built."""
    # keys never depend on where the stores are
    cfg = load_config(REPO / "configs" / "demo.yaml", [f"run_root={tmp_path}", f"cache_root={tmp_path / '_shared'}"])
    ctx = Context(cfg)
    keys = {"run": sorted(n.id for n in graph(ctx, sweeps=False))}
    cached = ctx.derive(build_config(apply_overrides(cfg.to_dict(), ["distill.targets=cached"])))
    keys["distill.targets=cached"] = sorted(n.id for n in graph(cached, sweeps=False) if n.node.stage == targets.STAGE)
    for trial in table2_trials():
        trial_ctx = ctx.derive(build_config(apply_overrides(cfg.to_dict(), trial.overrides)))
        stages = [s for s in trial.stages if s != distill.STAGE]  # the demo: sweep_students=false
        if not stages:
            continue
        nodes = closure(trial_ctx, trial_nodes(stages))
        keys[f"table2/{trial.name}"] = sorted(
            f"{a.stage}-{a.key}" for a in (planned(trial_ctx, n) for n in nodes) if a.stage in (multimodal.STAGE, attribute.STAGE)
        )
    return keys


def test_the_demo_keeps_its_artifact_keys(tmp_path):
    assert demo_keys(tmp_path) == DEMO_KEYS, (
        "a demo artifact key changed: if on purpose, paste the list `python tests/test_stage_keys.py` "
        "prints into DEMO_KEYS and say why in its comment"
    )


if __name__ == "__main__":  # prints the current keys, in DEMO_KEYS's layout
    import json
    import sys
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    with tempfile.TemporaryDirectory() as tmp:
        keys = demo_keys(Path(tmp))
    print("DEMO_KEYS = {")
    for label, listed in keys.items():
        if len(listed) > 2:
            print(f'    "{label}": [\n' + "".join(f'        "{k}",\n' for k in listed) + "    ],")
        else:
            print(f'    "{label}": {json.dumps(listed)},')
    print("}")
