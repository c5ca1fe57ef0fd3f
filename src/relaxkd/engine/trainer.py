"""Lightning Trainer construction and resumable fitting, shared by every training stage."""
from __future__ import annotations

import logging
import os
import random
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader, Dataset

from relaxkd.artifacts import file_sha256
from relaxkd.checkpoints import differences, read_checkpoint
from relaxkd.engine.batch_norm import guard_single_value_batches
from relaxkd.engine.console import EpochLines, stage_label
from relaxkd.engine.launch import check_launcher, silence_srun_hint
from relaxkd.engine.sampling import EpochAwareSampler, finish_batch, loader_collate_fn
from relaxkd.engine.settings import TrainerConfig
from relaxkd.errors import UserError

LAST_CHECKPOINT = "last.ckpt"
#: multi-process fits done in this process under an external launcher (torchrun, SLURM)
_EXTERNAL_FITS = 0


def resolve_precision(precision: str) -> str:
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


class RngState(Callback):
    """Saves and restores every RNG in checkpoints so a resumed run continues bit-identically."""

    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            # plain ints, not an ndarray: checkpoints must load with torch.load(weights_only=True)
            "numpy": (name, keys.tolist(), int(pos), int(has_gauss), float(cached)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


class NonFiniteLossGuard(Callback):
    """Stops training on a NaN/inf loss, naming the step and the last good checkpoint.

    On the CPU every step's loss is checked. On an accelerator reading the loss would make the host
    wait for the device every step, so the first bad step is recorded on the device and read every
    ``CHECK_EVERY`` steps and at the epoch's last batch, before validation and the epoch-end
    checkpoint: the error names the same step, a few steps later.
    """

    CHECK_EVERY = 50

    def __init__(self, checkpoint_dir: Path):
        self.checkpoint_dir = checkpoint_dir
        self._first_bad: torch.Tensor | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        bad = ~torch.isfinite(loss.detach()).all()
        if loss.device.type == "cpu":
            if bad:
                self._stop(trainer, trainer.current_epoch, trainer.global_step)
            return
        # (epoch, step) of the first bad loss, or -1: updated on the device, no host sync
        here = torch.tensor([trainer.current_epoch, trainer.global_step], device=loss.device)
        if self._first_bad is None or self._first_bad.device != loss.device:
            self._first_bad = torch.full((2,), -1, dtype=here.dtype, device=loss.device)
        self._first_bad = torch.where(bad & (self._first_bad[0] < 0), here, self._first_bad)
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        if last_batch or trainer.global_step % self.CHECK_EVERY == 0:
            epoch, step = self._first_bad.tolist()
            if epoch >= 0:
                self._stop(trainer, epoch, step)

    def _stop(self, trainer, epoch: int, step: int) -> None:
        last = self.checkpoint_dir / LAST_CHECKPOINT
        where = str(last) if last.exists() else "none yet"
        raise UserError(
            f"training stopped: non-finite loss at epoch {epoch}, step {step}; "
            f"last good checkpoint: {where}; lower the learning rate or check the data"
        )


class SeededDataModule(L.LightningDataModule):
    """Train/val loaders with deterministic, rank-aware, resumable sampling.

    With a training transform whose batch stage runs on the device (``batch_stage="device"``) the
    loader yields uint8 crops and their draws (``DeviceBatch``, pinned on a GPU machine) and
    :meth:`on_after_batch_transfer` finishes them on the training device, for any module.
    """

    def __init__(self, train: Dataset, val: Dataset | None, batch_size: int, num_workers: int, seed: int):
        super().__init__()
        self.train_set, self.val_set = train, val
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        trainer = self.trainer
        sampler = EpochAwareSampler(
            dataset,
            seed=self.seed,
            shuffle=shuffle,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=loader_collate_fn(dataset),
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, (list, tuple)) and batch and self.train_set is not None:
            images = finish_batch(self.train_set, batch[0])
            if images is not batch[0]:
                return (images, *batch[1:])
        return batch

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, shuffle=False) if self.val_set is not None else []


def quiet_lightning() -> None:
    """Silence Lightning's start-up banners and warnings that do not apply to frozen teachers."""

    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric.utilities.seed",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    # frozen teachers are deliberately in eval mode inside a training module
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*Experiment logs directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers which may be a bottleneck.*")
    # small datasets have fewer batches per epoch than the logging interval: per-epoch metrics are logged anyway
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval Trainer\(log_every_n_steps.*")
    # resuming an interrupted stage reuses its checkpoint folder on purpose
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
    # a SLURM login node or batch job: relaxkd puts srun in front itself where a job has several tasks
    silence_srun_hint()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written whole or not at all: into a temporary file beside the target, fsync'ed,
    then renamed over it. Until the rename the previous checkpoint stays intact, so a full disk or a
    kill mid-write leaves the last good one to resume from (Lightning writes in place).

    ``<checkpoint>.sha256`` lists the digests of the new and the previous checkpoint (written before
    the rename, so whichever of the two is in place after a crash is listed); resuming refuses a
    checkpoint whose digest is not listed: it was damaged after it was written.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            digests = [file_sha256(tmp)]
            if path.is_file():
                digests.append(file_sha256(path))
            _write_synced(digest_path(path), "\n".join(digests) + "\n")
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        finally:
            tmp.unlink(missing_ok=True)


def digest_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".sha256")


def _write_synced(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def build_trainer(
    cfg: TrainerConfig, work_dir: Path, max_epochs: int, callbacks: list[Callback] | None = None
) -> L.Trainer:
    quiet_lightning()
    check_launcher(cfg)
    checkpoint_dir = work_dir / "checkpoints"
    # one rolling checkpoint, rewritten after every epoch (save_last with save_top_k=0 never writes it)
    checkpointing = ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename=LAST_CHECKPOINT.removesuffix(".ckpt"),
        save_top_k=1,
        every_n_epochs=1,
        enable_version_counter=False,
    )
    progress: list[Callback] = []
    bar = cfg.progress and sys.stderr.isatty()  # not a terminal: one line per epoch, no bar redraws
    if bar:
        progress = [RichProgressBar(leave=True)]
    elif cfg.progress:
        progress = [EpochLines(stage_label(work_dir))]
    if cfg.logger == "csv":
        logger: Any = CSVLogger(work_dir, name="logs", version=0)
    elif cfg.logger == "tensorboard":
        logger = TensorBoardLogger(work_dir, name="logs", version=0)
    else:
        logger = False
    callbacks = [checkpointing, RngState(), NonFiniteLossGuard(checkpoint_dir), *progress, *(callbacks or [])]
    try:
        return L.Trainer(
            max_epochs=max_epochs,
            accelerator=cfg.accelerator,
            devices=cfg.devices,
            num_nodes=cfg.num_nodes,
            strategy=cfg.strategy,
            precision=resolve_precision(cfg.precision),
            accumulate_grad_batches=cfg.accumulate_grad_batches,
            deterministic=cfg.deterministic,
            use_distributed_sampler=False,  # SeededDataModule shards by rank itself
            enable_progress_bar=bar,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            logger=logger,
            log_every_n_steps=10,
            default_root_dir=work_dir,
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],
        )
    except (MisconfigurationException, ValueError) as err:  # Lightning's verdict on the trainer.* values
        raise UserError(f"trainer settings: {err}; check trainer.accelerator, devices, strategy and precision") from None


def fit(trainer: L.Trainer, module: L.LightningModule, data: L.LightningDataModule, work_dir: Path) -> None:
    """Fit, resuming from the stage's last checkpoint when a previous run was interrupted."""
    last = work_dir / "checkpoints" / LAST_CHECKPOINT
    if _EXTERNAL_FITS and trainer.world_size > 1:
        # externally launched workers exited after the previous stage's fit and cannot be restarted
        raise UserError(
            "this command trains more than one stage under an external DDP launcher (torchrun, SLURM); "
            "train the earlier stages first (e.g. `relaxkd teacher`), then rerun it"
        )
    if last.exists():
        check_resumable(last, module, work_dir)
        if trainer.global_rank == 0:
            print(f"[relaxkd] resuming from checkpoint {last}", file=sys.stderr, flush=True)
    guard_single_value_batches(module)  # a last batch of one sample trains (engine/batch_norm.py)
    # weights_only: a checkpoint is data, never code (RngState keeps its state to plain types for this)
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if last.exists() else None, weights_only=True)
    if trainer.world_size > 1:
        _end_distributed(trainer)


def check_resumable(last: Path, module: L.LightningModule, work_dir: Path) -> None:
    """Refuse a resume checkpoint that is damaged or was saved by another model, naming both sides.

    Lightning would fail deep inside ``fit`` with a traceback; the remedy is the same for both:
    start the stage afresh (its work dir holds nothing else of value).
    """
    advice = f"delete {work_dir} to train this stage from the start (completed artifacts are kept)"
    recorded = digest_path(last)
    if recorded.is_file():
        if file_sha256(last) not in recorded.read_text().split():
            raise UserError(
                f"resume checkpoint {last} is not the file relaxkd wrote (its SHA-256 is not in {recorded.name}: "
                f"changed or damaged since); {advice}"
            )
    checkpoint = read_checkpoint(last, f"resume checkpoint {last}", advice, mmap=True)
    found = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(found, dict):
        raise UserError(f"resume checkpoint {last} is not a Lightning checkpoint (no state_dict); {advice}")
    detail = differences(found, module.state_dict(), "the checkpoint", "this run", strict=module.strict_loading)
    if not detail:
        return
    saved, ours = checkpoint.get("hyper_parameters") or {}, dict(module.hparams)
    changed = [k for k in ours if _plain(ours[k]) and k in saved and saved[k] != ours[k]]
    if changed:  # e.g. arch or num_classes: the clearest names for the two sides
        detail = (
            "checkpoint has " + ", ".join(f"{k}={saved[k]!r}" for k in changed)
            + "; this run has " + ", ".join(f"{k}={ours[k]!r}" for k in changed) + f": {detail}"
        )
    raise UserError(f"cannot resume from {last}: it was saved by another model ({detail}); {advice}")


def _plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


def _end_distributed(trainer: L.Trainer) -> None:
    """After a multi-process fit: workers exit, rank 0 goes on alone to write the artifact.

    Lightning's subprocess launcher starts workers that re-run the whole command; they reuse every
    committed artifact and so join the first training stage still missing. A command may train
    several stages (e.g. `distill` trains missing teachers first): rank 0 waits for its workers,
    tears the process group down and clears LOCAL_RANK so the next stage's trainer starts fresh
    workers, which find this stage's artifact committed and join the next fit.
    """
    if trainer.global_rank != 0:
        sys.exit(0)
    procs = list(getattr(trainer.strategy.launcher, "procs", None) or [])
    for proc in procs:
        proc.wait()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if procs:
        os.environ.pop("LOCAL_RANK", None)
    else:
        global _EXTERNAL_FITS
        _EXTERNAL_FITS += 1


def seed_everything(seed: int) -> None:
    L.seed_everything(seed, workers=True, verbose=False)
