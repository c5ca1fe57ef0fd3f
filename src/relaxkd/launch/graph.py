"""The adapter between the stage graph (stages/plan.py: ``graph``, ``build_node``) and jobs.

Each node of a run's or a sweep's graph becomes a job that builds that one artifact in a fresh
process (``relaxkd build-node``) from a copy of its config; the report job runs the inline command,
which finds every artifact on disk, writes the run's records and the report.
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

from relaxkd.artifacts import stable_hash
from relaxkd.config import ExperimentConfig, apply_overrides, build_config
from relaxkd.launch.jobs import JobSpec, LaunchFolder, trains

#: how a job starts relaxkd: this interpreter, the environment is the submitter's (sbatch --export=ALL)
RELAXKD = [sys.executable, "-m", "relaxkd"]


def graph_nodes(ctx, family: str | None = None, trials: str | None = None) -> list:
    """The nodes of the run (``family`` None: the experiment and its ``sweeps``) or of one sweep family."""
    from relaxkd.stages import plan

    if family is None:
        return plan.graph(ctx)
    return plan.sweep_graph(ctx, family, trials)


def jobs_for(ctx, nodes: list, report_name: str, report_argv: list[str]) -> list[JobSpec]:
    """One job per node (inputs first, as the graph lists them), then the report job waiting for all."""
    folder = LaunchFolder(ctx.cfg.run_dir)
    folder.prepare()
    jobs = []
    for node in nodes:
        cfg = build_config(apply_overrides(ctx.cfg.to_dict(), list(node.overrides))) if node.overrides else ctx.cfg
        argv = [*RELAXKD, "build-node", str(_config_file(folder, cfg)), "--stage", node.node.stage, "--expect", node.id]
        if node.node.arg is not None:
            argv += ["--arg", node.node.arg]
        tasks, nodes_ = _tasks(cfg) if trains(node.node.stage) else (1, 1)
        jobs.append(JobSpec(node.id, node.node.stage, argv, deps=sorted(set(node.inputs.values())), path=node.path,
                            tasks=tasks, nodes=nodes_))
    jobs.append(JobSpec(report_name, "report", report_argv, deps=[job.name for job in jobs]))
    return jobs


def _config_file(folder: LaunchFolder, cfg: ExperimentConfig) -> Path:
    """The node's whole config as YAML (the job reads it as is: no overrides to re-apply)."""
    data = cfg.to_dict()
    path = folder.root / "configs" / f"{stable_hash(data)[:16]}.yaml"
    if not path.exists():
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path.resolve()


def _tasks(cfg: ExperimentConfig) -> tuple[int, int]:
    """(processes per node, nodes) of a training job: one per device under ``srun`` when several are asked for."""
    devices = cfg.trainer.devices  # a count, "auto" (one process unless a launcher says otherwise) or indices "0,1"
    if isinstance(devices, int):
        return devices, cfg.trainer.num_nodes
    indices = [d for d in devices.split(",") if d.strip()] if "," in devices else []
    return max(len(indices), 1), cfg.trainer.num_nodes


def build_node(config: Path, stage: str, arg: str | None, expect: str | None):
    """The artifact of one node, built alone (its inputs are on disk); refuses a config whose key moved."""
    from relaxkd.config import load_config
    from relaxkd.errors import UserError
    from relaxkd.stages import plan
    from relaxkd.stages.context import Context
    from relaxkd.stages.graph import Node

    ctx = Context(load_config(config, []))
    node = Node(stage, arg)
    if expect is not None:
        from relaxkd.stages.graph import planned

        found = planned(ctx, node)
        if f"{found.stage}-{found.key}" != expect:
            raise UserError(f"this job was planned to build {expect} but its config gives {found.stage}-{found.key}; "
                            f"relaunch the run (the code or the data changed since it was submitted)")
    return plan.build_node(ctx, node)
