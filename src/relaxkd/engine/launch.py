"""Which process this is and how it was launched, answered without importing Lightning (the command
line asks before every stage; Lightning's import alone takes seconds).

Lightning's SLURM hint ("The `srun` command is available on your system but is not used") is
silenced here, where the environments are probed: a stage decides its own environment, and on a
cluster login node the hint is noise printed by every stage.
"""
from __future__ import annotations

import os
import warnings
from typing import Any

from relaxkd.engine.settings import TrainerConfig
from relaxkd.errors import UserError

#: Lightning's warning when ``srun`` is on PATH but the process was not started by it
SRUN_HINT = r"The `srun` command is available on your system but is not used"


def silence_srun_hint() -> None:
    warnings.filterwarnings("ignore", message=f".*{SRUN_HINT}.*")


def is_main_process() -> bool:
    """False in the worker processes Lightning's DDP launcher starts (they re-run the command) and in
    the tasks of an ``srun`` other than the first."""
    ranks = ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    return all(int(os.environ.get(name, 0) or 0) == 0 for name in ranks)


def check_launcher(cfg: TrainerConfig) -> None:
    """Several nodes need a launcher that tells each process its place (SLURM, torchrun, MPI, LSF,
    Kubeflow, or MASTER_ADDR + NODE_RANK set by hand); without one, rank 0 waits forever for nodes
    that never come ("Initializing distributed")."""
    if cfg.num_nodes <= 1:
        return
    # only a multi-node config asks Lightning, so other commands start without its import
    from lightning.fabric.plugins.environments import (  # noqa: PLC0415
        KubeflowEnvironment,
        LSFEnvironment,
        MPIEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    silence_srun_hint()
    detected = [env for env in (SLURMEnvironment, TorchElasticEnvironment, MPIEnvironment, LSFEnvironment, KubeflowEnvironment)
                if _detects(env)]
    if detected or ("MASTER_ADDR" in os.environ and ("NODE_RANK" in os.environ or "RANK" in os.environ)):
        return
    raise UserError(
        f"trainer.num_nodes={cfg.num_nodes} needs a multi-node launcher (srun under SLURM, torchrun --nnodes, mpirun), "
        f"or MASTER_ADDR, MASTER_PORT and NODE_RANK set on every node; none was found, so the run would wait forever "
        f"for the other nodes. Launch it that way, or set trainer.num_nodes=1"
    )


def _detects(environment: Any) -> bool:
    try:
        return bool(environment.detect())
    except Exception:  # noqa: BLE001 - a half-configured environment is no launcher
        return False
