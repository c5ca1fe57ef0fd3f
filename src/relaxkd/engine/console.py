"""What training prints: a progress bar on a terminal, one line per epoch anywhere else (logs, CI, pipes)."""
from __future__ import annotations

import sys
import time

from lightning.pytorch.callbacks import Callback


class EpochLines(Callback):
    """One line per epoch on stderr, e.g. ``[relaxkd] distill 3a9c1f20 epoch 3/8: train loss 1.234, val top-1 56.7 % (4.1 s)``.

    Used instead of a progress bar when stderr is not a terminal: a bar redrawn there is hundreds
    of kilobytes of carriage returns per stage.
    """

    def __init__(self, label: str):
        self.label = label
        self._started = time.time()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._started = time.time()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.global_rank != 0 or getattr(trainer, "sanity_checking", False):
            return
        epoch = trainer.current_epoch
        parts = []
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            parts.append(f"train loss {float(loss):.3f}")
        history = getattr(pl_module, "history", None) or []
        if history and history[-1].get("epoch") == epoch and "top1" in history[-1]:
            parts.append(f"val top-1 {history[-1]['top1']:.1f} %")
        detail = ": " + ", ".join(parts) if parts else ""
        print(f"[relaxkd] {self.label} epoch {epoch + 1}/{trainer.max_epochs}{detail} ({time.time() - self._started:.1f} s)",
              file=sys.stderr, flush=True)


def stage_label(work_dir) -> str:
    """``.work/teacher-unimodal-3a9c1f20aa…`` -> ``teacher-unimodal 3a9c1f20``."""
    name = getattr(work_dir, "name", str(work_dir))
    stage, _, key = name.rpartition("-")
    return f"{stage} {key[:8]}" if stage else name
