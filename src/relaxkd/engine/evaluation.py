"""Validation bookkeeping shared by every LightningModule: logits gathered across ranks by index."""
from __future__ import annotations

from typing import Any

import lightning as L
import torch

from relaxkd.engine.metrics import classification_metrics


class ClassifierModule(L.LightningModule):
    """Base module: collects validation logits, computes metrics, keeps a per-epoch history.

    The history lives in checkpoints, so a resumed run reports the same history as an
    uninterrupted one.
    """

    def __init__(self, class_counts: list[int] | None = None):
        super().__init__()
        self.class_counts = class_counts
        self.history: list[dict[str, Any]] = []
        self.last_val_logits: torch.Tensor | None = None
        self._val_parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def setup(self, stage: str) -> None:
        # on an accelerator convolutions run fastest in channels_last (NHWC): 4-D weights are
        # converted here, before the optimiser is built; a device-side batch stage hands over
        # channels_last images, others are converted by the first convolution. CPU runs keep NCHW.
        if self._trainer is not None and self.trainer.strategy.root_device.type != "cpu":
            self.to(memory_format=torch.channels_last)

    def log_train(self, terms: dict[str, torch.Tensor], prog_bar: str | None = "train/loss") -> None:
        """Log training terms without making the host wait for the device: on an accelerator they
        accumulate on the device and are logged as epoch means (an ``.item()`` per step, as step
        logging and the progress bar do, would stall the step); on the CPU per step as well."""
        on_step = self.device.type == "cpu"
        for name, value in terms.items():
            self.log(name, value, on_step=on_step, on_epoch=not on_step or None, prog_bar=name == prog_bar)

    def store_validation(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> None:
        self._val_parts.append((logits.detach().float(), targets.detach(), indices.detach()))

    def on_validation_epoch_start(self) -> None:
        self._val_parts = []

    def on_validation_epoch_end(self) -> None:
        if not self._val_parts:
            return
        logits, targets, indices = (torch.cat(parts) for parts in zip(*self._val_parts))
        self._val_parts = []
        if self.trainer.world_size > 1:
            # DistributedSampler pads ranks to equal length: gather, then keep one row per index
            logits, targets, indices = (self.all_gather(t).flatten(0, 1) for t in (logits, targets, indices))
        order = torch.argsort(indices, stable=True)
        indices, logits, targets = indices[order], logits[order], targets[order]
        keep = torch.ones_like(indices, dtype=torch.bool)
        keep[1:] = indices[1:] != indices[:-1]
        logits, targets = logits[keep].cpu(), targets[keep].cpu()
        self.last_val_logits = logits
        metrics = classification_metrics(logits, targets, self.class_counts)
        metrics = {"epoch": self.current_epoch, **metrics, **self.extra_epoch_metrics()}
        self.history.append(metrics)
        self.log_dict(
            {f"val/{k}": float(v) for k, v in metrics.items() if k not in ("epoch", "num_samples")}, rank_zero_only=True
        )

    def extra_epoch_metrics(self) -> dict[str, float]:
        return {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["relaxkd_history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("relaxkd_history", []))
