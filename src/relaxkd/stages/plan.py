"""The plan of a run, derived from the stage records (stages/graph.py), and running it with one
progress display.

An experiment's graph is everything its student (``distill``) and, when T_x teaches, T_x's
attribution are built from (:func:`main_nodes`); a sweep trial adds the nodes of its config. The
runner resolves each node's inputs before the node; :func:`graph` lists the whole graph of a run
and its sweeps as data (artifact id, stage, inputs, the overrides that make its config), each node
buildable alone in a fresh process by :func:`build_node`.
"""
from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from relaxkd.artifacts import Artifact, write_json
from relaxkd.config import ExperimentConfig, apply_overrides, build_config
from relaxkd.errors import UserError
from relaxkd.names import TX
from relaxkd.stages import attribute, distill
from relaxkd.stages.context import Context, log
from relaxkd.stages.graph import Node, artifact, check_stage, closure, inputs_of, planned
from relaxkd.stages.teacher_loading import teacher_node, used_teachers
from relaxkd.trials import COMPARE, TABLE1_DATASETS, Trial, resolve_overrides, select_trials, sweep_commands


def main_nodes(cfg: ExperimentConfig) -> list[Node]:
    """What one experiment produces: its student and, when T_x teaches it, T_x's attribution."""
    return [distill_node(), *([Node(attribute.STAGE)] if TX in used_teachers(cfg) else [])]


def distill_node() -> Node:
    return Node(distill.STAGE)


def pipeline_nodes(ctx: Context) -> list[Node]:
    """Every node of the experiment, inputs first (cheap embedding stages before teachers, in registry order)."""
    return closure(ctx, main_nodes(ctx.cfg))


def trial_nodes(stages: list[str]) -> list[Node]:
    """The nodes a sweep trial records (``Trial.stages``: ``tx`` names T_x's node, the others are stage names)."""
    return [teacher_node(TX) if name == TX else Node(name) for name in stages]


@dataclass
class ProgressStep:
    name: str
    fn: Callable[[], object]
    #: artifact stages this step builds when nothing is reused (estimated from their measured times)
    builds: tuple[str, ...] = ()


class StageProgress:
    """One progress display across every step of a command, with an estimate of the time left.

    The estimate adds up, for each step still to come, the measured build times of the artifact
    stages it builds (``Context.timings``: students from students, T_x from T_x...). It is printed
    only when every remaining step's stages have been measured in this process; otherwise (early in
    a run, or a rerun that reuses everything) no estimate is printed rather than a wrong one.
    """

    def __init__(self, steps: list[ProgressStep], timings: dict[str, list[float]]):
        self.steps, self.timings, self.done = steps, timings, 0

    def estimate(self) -> float | None:
        """Seconds left for the steps not yet started, or None when some stage was never measured."""
        total = 0.0
        for step in self.steps[self.done:]:
            for stage in step.builds:
                measured = self.timings.get(stage)
                if not measured:
                    return None
                total += sum(measured) / len(measured)
        return total

    def run_all(self) -> object:
        result = None
        for step in self.steps:
            result = self.run(step)
        return result

    def run(self, step: ProgressStep) -> object:
        left = self.estimate()
        eta = "" if left is None or left < 1 else f", about {_duration(left)} left"
        log(f"stage {self.done + 1}/{len(self.steps)}: {step.name}{eta}")
        result = step.fn()
        self.done += 1
        return result


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def experiment_steps(ctx: Context) -> list[ProgressStep]:
    """The experiment's stages, then each sweep's trials (one step per trial and seed)."""
    main: dict = {"artifacts": {}}  # run.json: this run's artifacts by node, rewritten as they resolve
    steps = [ProgressStep(str(node), partial(_main_stage, ctx, node, main), (node.stage,)) for node in pipeline_nodes(ctx)]
    for family in run_sweeps(ctx.cfg):
        steps += sweep_steps(ctx, family)
    return steps


def run_sweeps(cfg: ExperimentConfig) -> list[str]:
    """The sweep families `relaxkd run` runs: ``sweeps``, then ``compare`` when ``compare_no_kd`` is on
    (by default on data that is not one of the paper's six datasets)."""
    compare = cfg.compare_no_kd if cfg.compare_no_kd is not None else cfg.data.dataset not in TABLE1_DATASETS
    return [*cfg.sweeps, COMPARE] if compare and COMPARE not in cfg.sweeps else list(cfg.sweeps)


def _main_stage(ctx: Context, node: Node, main: dict) -> Artifact:
    """A node of the main experiment; ``run.json`` records its artifact for the report."""
    found = artifact(ctx, node)
    main["artifacts"][str(node)] = str(found.path)
    write_json(ctx.cfg.run_dir / "run.json", main)
    return found


def run_experiment(ctx: Context, then: list[tuple[str, Callable[[], object]]] = ()) -> object:
    """Every stage of the experiment, then its sweeps, then ``then`` (the command line's report);
    returns the last result."""
    steps = experiment_steps(ctx) + [ProgressStep(name, fn) for name, fn in then]
    return StageProgress(steps, ctx.timings).run_all()


def sweep_seeds(cfg: ExperimentConfig) -> list[int]:
    """The seeds each sweep trial runs with: ``seeds`` when set, else ``seed`` alone."""
    return list(cfg.seeds) if getattr(cfg, "seeds", None) else [cfg.seed]


def trains_students(cfg: ExperimentConfig, family: str, trial: str) -> bool:
    """``sweep_students``: true, false, or ``family/trial`` patterns (fnmatch) whose students train."""
    wanted = cfg.sweep_students
    if isinstance(wanted, bool):
        return wanted
    return any(fnmatch.fnmatchcase(f"{family}/{trial}", pattern) for pattern in wanted)


def sweep_steps(ctx: Context, family: str, names: str | None = None, strict: bool = False) -> list[ProgressStep]:
    """One step per trial of ``family`` and seed; each records its artifacts in ``sweep-<family>.json``.

    A trial's record keeps ``runs`` (seed -> artifact paths) for the seeds of this command and
    ``artifacts`` (those of the first seed) for readers of one run per trial. Every trial's config
    is checked here, before any stage runs. When ``sweep_students`` leaves nothing to run, ``strict``
    (the sweep command) refuses with one line, else (a run's sweeps) a warning says so.
    """
    trials = select_trials(family, names)
    record_path = ctx.cfg.run_dir / f"sweep-{family}.json"
    record = _read_record(record_path)
    seeds = sweep_seeds(ctx.cfg)
    steps, left_out = [], 0
    for trial in trials:
        stages = trial_stages(ctx.cfg, family, trial)
        if not stages:  # e.g. a student-only trial that sweep_students leaves out
            left_out += 1
            continue
        missing = unmet_requirements(ctx, trial)
        if missing and names is not None:
            raise UserError(
                f"trial {trial.name!r} of sweep {family} needs {missing} training data; dataset {ctx.cfg.data.dataset!r} "
                f"is not {missing}; use e.g. cifar100_lt or imagenet_lt"
            )
        if missing:
            log(f"{family} trial {trial.name}: skipped, it needs {missing} data (dataset {ctx.cfg.data.dataset!r} is not)")
            continue
        base_overrides = resolve_overrides(list(trial.overrides), ctx.cfg.to_dict())
        check_trial_config(ctx.cfg, family, trial.name, base_overrides)
        for seed in seeds:
            overrides = [*base_overrides, f"seed={seed}"]

            def execute(trial: Trial = trial, stages: list[str] = stages, seed: int = seed, overrides: list[str] = overrides,
                        recorded: list[str] = base_overrides) -> None:
                trial_ctx = ctx.derive(build_config(apply_overrides(ctx.cfg.to_dict(), overrides)))
                found = {stage: str(artifact(trial_ctx, node).path) for stage, node in zip(stages, trial_nodes(stages))}
                entry = record.get(trial.name, {})
                runs = entry.get("runs", {}) if entry.get("seeds") == seeds else {}
                runs[str(seed)] = found
                runs = {str(s): runs[str(s)] for s in seeds if str(s) in runs}
                record[trial.name] = {"labels": trial.labels, "overrides": recorded, "seeds": seeds,
                                      "runs": runs, "artifacts": next(iter(runs.values()))}
                write_json(record_path, record)

            name = f"{family} {trial.name}" + (f" seed {seed}" if len(seeds) > 1 else "")
            steps.append(ProgressStep(name, execute, tuple(n.stage for n in trial_nodes(stages))))
    if not steps and left_out:
        _nothing_to_run(ctx.cfg, family, strict)
    return steps


def trial_stages(cfg: ExperimentConfig, family: str, trial: Trial) -> list[str]:
    """The stages of ``trial`` this config runs: its student only when ``sweep_students`` says so
    (``compare``'s students always: ``compare_no_kd`` asked for them)."""
    students = family == COMPARE or trains_students(cfg, family, trial.name)
    return [s for s in trial.stages if s != distill.STAGE or students]


def sweep_command_lines(ctx: Context, config: Path, overrides: list[str], family: str, names: str | None) -> list[str]:
    """``sweep --print-commands``: one command per trial that will run; a trial that will not is a
    ``#`` comment saying why (``sweep_students``, data it needs), so a scheduler runs nothing for it."""
    lines = []
    # the data is read (class counts) but never downloaded just to print commands
    local = ctx.derive(build_config(apply_overrides(ctx.cfg.to_dict(), ["data.download=false"])))
    for trial, command in zip(select_trials(family, names), sweep_commands(config, overrides, family, names)):
        why = None
        if not trial_stages(ctx.cfg, family, trial):
            why = f"{students_setting(ctx.cfg)} leaves out its student, and it trains nothing else"
        elif trial.requires:
            try:
                missing = unmet_requirements(local, trial)
            except UserError:  # no data on this machine (a cluster's login node)
                missing, why = None, "it runs on long-tailed data only, and the data could not be read here to check"
            if missing:
                why = f"it needs {missing} data; dataset {ctx.cfg.data.dataset!r} is not"
        lines.append(command if why is None else f"# skipped, {why}: {command}")
    return lines


def trial_config_text(cfg: ExperimentConfig, family: str, names: str | None) -> str:
    """Each selected trial's resolved config as YAML, its KD method's resolved recipe included
    (``distill.method_params``), headed by ``# <family>/<trial>``: what the trial would run."""
    import yaml

    blocks = []
    for trial in select_trials(family, names):
        resolved = build_config(apply_overrides(cfg.to_dict(), resolve_overrides(list(trial.overrides), cfg.to_dict())))
        data = resolved.to_dict()
        recipe = resolved.distill.method_params()
        data["distill"]["method_params"] = recipe.model_dump() if hasattr(recipe, "model_dump") else recipe
        blocks.append(f"# {family}/{trial.name}\n" + yaml.safe_dump(data, sort_keys=False).rstrip())
    return "\n".join(blocks)


def students_setting(cfg: ExperimentConfig) -> str:
    """``sweep_students=...`` as a user would type it."""
    wanted = cfg.sweep_students
    return f"sweep_students={str(wanted).lower() if isinstance(wanted, bool) else '[' + ', '.join(wanted) + ']'}"


def check_trial_config(cfg: ExperimentConfig, family: str, trial: str, overrides: list[str]) -> None:
    """The trial's resolved config is valid (keys, values, registry names), or one line naming the trial."""
    from relaxkd.config import check_names

    try:
        check_names(build_config(apply_overrides(cfg.to_dict(), list(overrides))))
    except UserError as err:
        raise UserError(f"sweep {family}, trial {trial!r}: {err}; or leave the trial out with --trials") from None


def _nothing_to_run(cfg: ExperimentConfig, family: str, strict: bool) -> None:
    """``sweep_students`` left out the students of the selected trials, which train nothing else."""
    message = (f"sweep {family}: {students_setting(cfg)} leaves out the student of every selected trial, and these "
               f"trials train nothing else; set sweep_students=true, or list the trials whose students train "
               f"(e.g. sweep_students=[{family}/*])")
    if strict:
        raise UserError(message)
    log(f"warning: {message}")


def run_sweep(ctx: Context, family: str, names: str | None = None) -> None:
    """Run the trials of one family (every seed) on top of ``ctx``'s config; record them in ``sweep-<family>.json``."""
    StageProgress(sweep_steps(ctx, family, names, strict=True), ctx.timings).run_all()


def unmet_requirements(ctx: Context, trial: Trial) -> str | None:
    """The first of ``trial.requires`` the experiment's data does not meet, in words."""
    from relaxkd.engine.metrics import is_long_tailed

    if "long_tailed" in trial.requires and not is_long_tailed(ctx.class_counts):
        return "long-tailed"
    return None


def _read_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# -- the graph as data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphNode:
    """One artifact of a run's graph: what builds it and what it is built from, computed without building."""

    node: Node
    #: the artifact's ``<stage>-<key>``, also its directory name in its store
    id: str
    path: str
    #: input name -> id of the artifact it reads
    inputs: dict[str, str] = field(default_factory=dict)
    #: overrides on top of the run's config that give this node's config (a sweep trial's, with its seed)
    overrides: tuple[str, ...] = ()
    #: where it was first asked for: "main" or "<family>/<trial> seed <n>"
    origin: str = "main"

    def to_dict(self) -> dict:
        return {"id": self.id, "stage": self.node.stage, "arg": self.node.arg, "path": self.path, "inputs": self.inputs,
                "overrides": list(self.overrides), "origin": self.origin}


def graph(ctx: Context, sweeps: bool = True) -> list[GraphNode]:
    """The run's graph (its nodes, then with ``sweeps`` those of ``cfg.sweeps``' trials and seeds), inputs
    first, each artifact once. A node's config is the run's config with ``overrides`` applied;
    :func:`build_node` builds it alone, from its inputs on disk."""
    found: dict[str, GraphNode] = {}
    _add_nodes(found, ctx, main_nodes(ctx.cfg), (), "main")
    for family in run_sweeps(ctx.cfg) if sweeps else []:
        _add_trials(found, ctx, family, None)
    return list(found.values())


def sweep_graph(ctx: Context, family: str, names: str | None = None) -> list[GraphNode]:
    """The graph of one sweep family's trials (``names``: comma-separated, default all), every seed."""
    found: dict[str, GraphNode] = {}
    _add_trials(found, ctx, family, names)
    return list(found.values())


def _add_nodes(found: dict[str, GraphNode], ctx: Context, roots: list[Node], overrides: tuple[str, ...], origin: str) -> None:
    for node in closure(ctx, roots):
        art = planned(ctx, node)
        ident = _id(art)
        if ident not in found:
            inputs = {name: _id(planned(ctx, n)) for name, n in inputs_of(ctx, node).items()}
            found[ident] = GraphNode(node, ident, str(art.path), inputs, overrides, origin)


def _add_trials(found: dict[str, GraphNode], ctx: Context, family: str, names: str | None) -> None:
    """Each trial the sweep runs (as ``sweep_steps`` selects them), for every seed."""
    for trial in select_trials(family, names):
        stages = trial_stages(ctx.cfg, family, trial)
        if not stages or unmet_requirements(ctx, trial):
            continue
        base = resolve_overrides(list(trial.overrides), ctx.cfg.to_dict())
        for seed in sweep_seeds(ctx.cfg):
            overrides = (*base, f"seed={seed}")
            trial_ctx = ctx.derive(build_config(apply_overrides(ctx.cfg.to_dict(), list(overrides))))
            _add_nodes(found, trial_ctx, trial_nodes(stages), overrides, f"{family}/{trial.name} seed {seed}")


def _id(art: Artifact) -> str:
    return f"{art.stage}-{art.key}"


def build_node(ctx: Context, node: Node) -> Artifact:
    """``node``'s artifact alone (``ctx``: the run's config with the node's overrides): reused when
    present, else built from its inputs, which must be on disk already (a scheduler builds them first)."""
    check_stage(node.stage)
    for name, needed in inputs_of(ctx, node).items():
        art = planned(ctx, needed)
        if not Path(art.path).is_dir():  # committed artifacts only: a build in progress sits in a temporary directory
            raise UserError(f"{node} needs its input {name} ({art.stage}-{art.key}), which is not built yet; build it first")
    return artifact(ctx, node)
