"""The pipeline as data (issue 21): stage records, the graph the plan derives from them, and a node
built alone. Nothing here trains: keys come from specs alone."""
from __future__ import annotations

import json
import re

import pytest

from relaxkd.config import load_config
from relaxkd.errors import UserError
from relaxkd.stages import attribute, distill, dmae_pretrain, embed_images, multimodal, relax, targets, unimodal
from relaxkd.stages.context import Context
from relaxkd.stages.graph import STAGES, Node, closure
from relaxkd.stages.plan import build_node, graph, pipeline_nodes

from cli_helpers import relaxkd
from conftest import REPO, tiny_overrides

SRC = REPO / "src" / "relaxkd"


def ctx_for(tmp_path, *extra: str) -> Context:
    return Context(load_config(REPO / "configs" / "demo.yaml", [*tiny_overrides(tmp_path / "runs"), *extra]))


def stages_of(nodes) -> list[str]:
    return [n.stage for n in nodes]


def test_the_demo_graph_lists_inputs_before_the_nodes_that_read_them(tmp_path):
    nodes = graph(ctx_for(tmp_path))
    ids = [n.id for n in nodes]
    assert len(ids) == len(set(ids))
    seen: set[str] = set()
    for node in nodes:
        assert set(node.inputs.values()) <= seen, node
        assert node.id == f"{node.node.stage}-{node.id.rsplit('-', 1)[1]}" and node.path.endswith(node.id)
        seen.add(node.id)
    assert stages_of(n.node for n in nodes) == [
        embed_images.STAGE,
        "embed-nouns",
        relax.STAGE,
        unimodal.STAGE,
        unimodal.STAGE,
        multimodal.STAGE,
        attribute.STAGE,
        distill.STAGE,
    ]
    student = nodes[-1]
    assert set(student.inputs) == {"teacher:strong", "teacher:weak", "teacher:tx"} and student.overrides == ()


def test_a_sweep_adds_its_trials_nodes_with_the_overrides_that_rebuild_them(tmp_path):
    ctx = ctx_for(tmp_path, "sweeps=[table3]", "seeds=[0, 1]", "sweep_students=true")
    nodes = graph(ctx)
    trial_students = [n for n in nodes if n.node.stage == distill.STAGE and n.origin.startswith("table3/")]
    # two banks x two seeds, but bank-learnable with seed 0 is the main run's student (the same key): listed once
    assert len(trial_students) == 3
    main_student = next(n for n in nodes if n.origin == "main" and n.node.stage == distill.STAGE)
    assert main_student.id not in {n.id for n in trial_students}
    assert {n.overrides[-1] for n in trial_students} == {"seed=0", "seed=1"}
    assert any("multimodal.bank=fixed" in n.overrides for n in trial_students)
    assert graph(ctx, sweeps=False) == [n for n in nodes if n.origin == "main"]


def test_the_plan_asks_the_method_what_it_needs(tmp_path):
    # no KD: no teacher, no T_x, no attribution is planned for a student that uses none
    assert stages_of(pipeline_nodes(ctx_for(tmp_path, "distill.loss=none"))) == [distill.STAGE]
    # DMAE: its pre-training stage is an input of the student, and no teacher runs beside it
    dmae = ctx_for(tmp_path, "distill.loss=dmae", "distill.teachers=[strong]", "distill.student=vit_micro")
    assert stages_of(pipeline_nodes(dmae)) == [unimodal.STAGE, dmae_pretrain.STAGE, distill.STAGE]
    # cached targets: their own node between the teachers and the student
    cached = ctx_for(tmp_path, "distill.targets=cached", "distill.teachers=[strong]")
    assert stages_of(pipeline_nodes(cached)) == [unimodal.STAGE, targets.STAGE, distill.STAGE]


def test_a_node_built_alone_refuses_missing_inputs_before_any_work(tmp_path):
    ctx = ctx_for(tmp_path)
    with pytest.raises(UserError, match=r"relax needs its input images \(embed-images-[0-9a-f]{16}\), which is not built yet"):
        build_node(ctx, Node(relax.STAGE))
    with pytest.raises(UserError, match="unknown stage 'nope'; valid stages: embed-images, "):
        build_node(ctx, Node("nope"))
    assert not any((tmp_path / "runs" / "demo").glob("relax-*"))


def test_graph_command_prints_one_json_node_per_line(capsys, monkeypatch, tmp_path):
    result = relaxkd(capsys, monkeypatch, "graph", REPO / "configs" / "demo.yaml", *tiny_overrides(tmp_path / "runs"),
                     "distill.loss=none")
    assert result.code == 0, result
    (node,) = [json.loads(line) for line in result.out.splitlines()]
    assert node["stage"] == distill.STAGE and node["inputs"] == {} and node["id"].startswith("distill-")


def test_every_method_stage_and_state_source_is_a_registered_stage():
    from relaxkd.methods import METHODS

    for name in METHODS.names():
        method = METHODS.get(name)
        assert set(method.stages) <= set(STAGES), name
        assert method.state_from is None or STAGES[method.state_from].method_state is not None, name
        for stage in method.stages:
            assert STAGES[stage].student_init is not None or STAGES[stage].method_state is not None, stage


#: config-layer mirrors of the stage names (validated without importing the stages, as preflight's
#: registry lists): kept equal to the records by test_mirrors_of_the_stage_names_list_every_stage
MIRRORS = ("launcher_config.py",)


def test_mirrors_of_the_stage_names_list_every_stage():
    from relaxkd.launcher_config import STAGE_DEFAULTS

    assert set(STAGE_DEFAULTS) - {"report"} == set(STAGES)


def test_each_stage_name_is_written_once_in_src():
    """Names with a hyphen cannot be mistaken for config sections (``relax``, ``distill``, ``attribute``)."""
    text = {p: p.read_text() for p in SRC.rglob("*.py") if str(p.relative_to(SRC)) not in MIRRORS}
    for name in (n for n in STAGES if "-" in n):
        found = [str(p.relative_to(SRC)) for p, t in text.items() for _ in re.finditer(f"[\"']{re.escape(name)}[\"']", t)]
        assert len(found) == 1, (name, found)


def test_no_method_name_is_compared_in_stages_or_config():
    pattern = re.compile(r"\bloss\s*(==|!=|in\b|not in\b)\s*[(\[{]?\s*[\"']")  # d.loss == "dmae", cfg.distill.loss != "none", ...
    for path in [*(SRC / "stages").glob("*.py"), SRC / "config.py"]:
        assert not pattern.search(path.read_text()), path


def test_closure_orders_ready_nodes_by_the_registry(tmp_path):
    ctx = ctx_for(tmp_path)
    order = closure(ctx, [Node(distill.STAGE), Node(attribute.STAGE)])
    assert (
        order.index(Node(embed_images.STAGE)) < order.index(Node(unimodal.STAGE, "strong")) < order.index(Node(multimodal.STAGE))
    )
