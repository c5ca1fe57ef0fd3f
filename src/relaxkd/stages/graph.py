"""The pipeline as data: every stage module declares one :class:`StageRecord`, and the runner here
resolves the graph they form.

A record names its stage once (the artifact prefix ``<name>-<key>``, the single-stage command, the
progress line and the report read that name), lists its inputs as :class:`Node` s, and gives a spec
function (every value that determines the result, inputs by key) and a build function (writes the
artifact's files). The runner resolves a node's inputs first, then reuses the artifact whose key
is the hash of its spec or builds it (``Context.resolve``); stages never call each other. Keys need
no build: :func:`planned` computes a node's artifact key and path from its inputs' keys alone, which
is how ``plan.graph`` lists a run or a sweep as data.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relaxkd.artifacts import Artifact
from relaxkd.errors import UserError
from relaxkd.stages.context import Context


@dataclass(frozen=True, order=True)
class Node:
    """One artifact of a run: a stage, and which one of its artifacts (a teacher's name) when a run has several."""

    stage: str
    arg: str | None = None

    def __str__(self) -> str:
        return self.stage if self.arg is None else f"{self.stage} {self.arg}"


@dataclass
class Job:
    """What a record's spec and build functions see: the context, the node and its resolved inputs."""

    ctx: Context
    node: Node
    inputs: dict[str, Artifact]
    #: set by the runner once the record's spec function has returned
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def cfg(self):
        return self.ctx.cfg

    @property
    def arg(self) -> str | None:
        return self.node.arg

    def work_dir(self) -> Path:
        """Resumable scratch space (checkpoints) of this artifact."""
        return self.ctx.work_dir(self.node.stage, self.spec)


@dataclass(frozen=True)
class StageRecord:
    """One stage, as data (see the module docstring)."""

    name: str
    #: what one artifact is, in words (the command's help, the progress line)
    label: str
    #: the nodes this one is built from, by the name its spec and build functions read them under
    inputs: Callable[[Context, str | None], dict[str, Node]]
    spec: Callable[[Job], dict[str, Any]]
    build: Callable[[Job, Path], None]
    #: kept in the shared cache store (``cache_root``, shared by datasets) instead of the run's
    shared: bool = False
    #: trains a model with Lightning (a launcher gives it the config's devices and tasks)
    trains: bool = False
    #: what a method's own stage hands the distillation (``KDMethod.stages``): the weights the student starts from
    student_init: Callable[[Artifact], dict] | None = None
    #: the state a method computes from the artifacts of this (teacher) stage (``KDMethod.state_from``)
    method_state: Callable[[Context, dict[str, Artifact]], dict[str, Any]] | None = None


#: the stage modules, in pipeline order (the plan runs ready nodes in this order): a new stage is its
#: file plus its name here. Imported on the first look-up, so that importing one stage module (or
#: stages/predict.py) stays light.
MODULES = ("embed_images", "embed_nouns", "relax", "unimodal", "expert", "tx_views", "multimodal", "attribute", "targets",
           "dmae_pretrain", "distill")


class _Registry(Mapping[str, StageRecord]):
    """Every stage's record by name, in :data:`MODULES` order; the stage modules register themselves."""

    def __init__(self) -> None:
        self._records: dict[str, StageRecord] = {}
        self._loaded = False

    def add(self, record: StageRecord) -> None:
        if record.name in self._records:
            raise ValueError(f"stage {record.name!r} is declared twice")
        self._records[record.name] = record

    def _all(self) -> dict[str, StageRecord]:
        if not self._loaded:
            self._loaded = True
            for module in MODULES:  # by name: the stage modules import this one
                importlib.import_module(f"relaxkd.stages.{module}")
            rank = {f"relaxkd.stages.{m}": i for i, m in enumerate(MODULES)}
            ordered = sorted(self._records.values(), key=lambda r: rank.get(r.build.__module__, len(rank)))
            self._records = {r.name: r for r in ordered}
        return self._records

    def __getitem__(self, name: str) -> StageRecord:
        return self._records[name] if name in self._records else self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


STAGES = _Registry()


def register(record: StageRecord) -> StageRecord:
    STAGES.add(record)
    return record


def check_stage(name: str) -> None:
    """One line listing the stages when ``name`` is none of them (a name typed on the command line)."""
    if name not in STAGES:
        raise UserError(f"unknown stage {name!r}; valid stages: {', '.join(STAGES)}")


def no_inputs(ctx: Context, arg: str | None) -> dict[str, Node]:
    return {}


def artifact(ctx: Context, node: Node) -> Artifact:
    """``node``'s artifact: reused when present and intact, else built (its inputs first)."""
    return _resolve(ctx, node, build=True)


def planned(ctx: Context, node: Node) -> Artifact:
    """``node``'s artifact as it is or would be (key and path), computed without building anything."""
    return _resolve(ctx, node, build=False)


def job(ctx: Context, node: Node, build: bool = True) -> Job:
    """``node``'s record's view of it: its inputs resolved (built when ``build``) and its spec."""
    record = STAGES[node.stage]
    inputs = {name: _resolve(ctx, n, build) for name, n in record.inputs(ctx, node.arg).items()}
    found = Job(ctx, node, inputs)
    found.spec = record.spec(found)
    return found


def _resolve(ctx: Context, node: Node, build: bool) -> Artifact:
    memo = ctx.nodes.setdefault(build, {})
    if node in memo:
        return memo[node]
    record = STAGES[node.stage]
    found = job(ctx, node, build)
    store = ctx.shared if record.shared else ctx.store
    if build:
        result = ctx.resolve(store, node.stage, found.spec, lambda out: record.build(found, out))
    else:
        key = store.key(node.stage, found.spec)
        result = Artifact(node.stage, key, store.path(node.stage, key), {})
    memo[node] = result
    return result


def closure(ctx: Context, roots: list[Node]) -> list[Node]:
    """``roots`` and everything they are built from, inputs before the nodes that read them; among
    nodes ready at the same time, the registry's (pipeline) order, then first asked first."""
    edges: dict[Node, list[Node]] = {}
    found: list[Node] = []

    def visit(node: Node) -> None:
        if node in edges:
            return
        edges[node] = list(STAGES[node.stage].inputs(ctx, node.arg).values())
        found.append(node)
        for n in edges[node]:
            visit(n)

    for root in roots:
        visit(root)
    rank = {name: i for i, name in enumerate(STAGES)}
    order, done = [], set()
    while len(order) < len(found):
        ready = [n for n in found if n not in done and all(i in done for i in edges[n])]
        nxt = min(ready, key=lambda n: (rank[n.stage], found.index(n)))
        order.append(nxt)
        done.add(nxt)
    return order


def inputs_of(ctx: Context, node: Node) -> dict[str, Node]:
    return STAGES[node.stage].inputs(ctx, node.arg)
