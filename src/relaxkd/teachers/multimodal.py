"""Multimodal teacher T_x: a classifier over concat(CLIP image embedding, text embedding).

The text of each sample follows its text mode (docs/method.md §5): the exact class name (``gt``), a
random class name (``noise``), soft retrieval from the learnable WordNet-relaxed bank (``wn``)
or nothing (``none``). Trained with eq. 6: CE + λ_hier·hierarchical + λ_cos·cosine regulariser.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from relaxkd.engine import optim
from relaxkd.engine.evaluation import ClassifierModule
from relaxkd.engine.settings import OptimConfig
from relaxkd.errors import UserError
from relaxkd.losses import multimodal_teacher_loss
from relaxkd.models import TextBank, build_fusion_head
from relaxkd.presets import MULTIMODAL_PRESETS
from relaxkd.relax import retrieve
from relaxkd.relax.retrieve import DEFAULT_TEMPERATURE
from relaxkd.teachers.text_modes import MODE_IDS

GT, WN, NOISE = MODE_IDS["gt"], MODE_IDS["wn"], MODE_IDS["noise"]


@dataclass(frozen=True)
class TxSettings:
    """The multimodal section's settings T_x reads, as one object (``of`` builds it from ``cfg.multimodal``).

    ``label_noise``: a ``noise`` sample's noise class is also its training target (the released
    code's relabelled samples); otherwise only its text names that class and the target stays its
    own label. ``text_split="batch"`` (the released code): the first int(batches · ``gt_share``)
    batches of each epoch take ``gt`` text, the rest ``wn``, instead of each sample's own mode.
    ``bank_fp16``: the bank is kept at float16 precision after every step (the released code's
    ``.half()`` parameter)."""

    head: str = "mlp"
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    bank_learnable: bool = True
    text_only: bool = False
    temperature: float = DEFAULT_TEMPERATURE
    lambda_hier: float = MULTIMODAL_PRESETS["paper"]["lambda_hier"]
    lambda_cos: float = MULTIMODAL_PRESETS["paper"]["lambda_cos"]
    bank_weight_decay: float = 1e-4
    label_noise: bool = False
    text_split: str = "sample"
    gt_share: float = 0.0
    bank_fp16: bool = False

    @classmethod
    def of(cls, m: Any) -> TxSettings:
        """The settings of a multimodal section (``MultimodalConfig``): the fields of the same name,
        and those it implies (the bank's learnability and dtype, the noise kind, the gt share)."""
        same = {f.name: getattr(m, f.name) for f in fields(cls) if hasattr(m, f.name) and f.name != "head_kwargs"}
        return cls(
            **same,
            head_kwargs={"hidden_dim": m.hidden_dim, "dropout": m.dropout, "batch_norm": m.batch_norm} if m.head == "mlp" else {},
            bank_learnable=m.bank == "learnable",
            label_noise=m.noise == "label" and m.proportions.get("noise", 0) > 0,
            gt_share=m.proportions.get("gt", 0.0),
            bank_fp16=m.bank_dtype == "fp16",
        )

    def hparams(self) -> dict[str, Any]:
        """Flat plain values: T_x's ``teacher.json`` rebuilds it from them (:meth:`MultimodalTeacher.from_hparams`)."""
        found = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "optim"}
        return {**found, "optim_cfg": self.optim.model_dump()}


class MultimodalTeacher(ClassifierModule):
    def __init__(
        self,
        settings: TxSettings,
        *,
        embed_dim: int,
        num_classes: int,
        bank_size: int,
        num_train: int = 0,
        num_val: int = 0,
        class_counts: list[int] | None = None,
        bank: torch.Tensor | None = None,
        class_text: torch.Tensor | None = None,
        text_assignment: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    ):
        """``bank`` (the relaxed bank), ``class_text`` (class-name embeddings) and ``text_assignment``
        (per split: every sample's text mode and noise class) are what a new teacher trains from; a
        reloaded one gets them from its state dict instead."""
        super().__init__(class_counts)
        self.save_hyperparameters({**settings.hparams(), "embed_dim": embed_dim, "num_classes": num_classes,
                                   "bank_size": bank_size, "num_train": num_train, "num_val": num_val})
        self.optim_cfg = settings.optim
        head, head_kwargs, bank_learnable = settings.head, settings.head_kwargs, settings.bank_learnable
        self.head = build_fusion_head(head, 2 * embed_dim, num_classes, **(head_kwargs or {}))
        self.bank = TextBank(torch.zeros(bank_size, embed_dim), learnable=bank_learnable) if bank_size else None
        self.init_bank(bank)
        self.register_buffer("class_text", torch.zeros(num_classes, embed_dim) if class_text is None else class_text.float())
        for split, n in (("train", num_train), ("val", num_val)):
            modes, noise = (text_assignment or {}).get(split, (None, None))
            self.register_buffer(f"{split}_modes", torch.zeros(n, dtype=torch.long) if modes is None else modes.long())
            self.register_buffer(f"{split}_noise", torch.zeros(n, dtype=torch.long) if noise is None else noise.long())
        #: maps an image batch to CLIP image embeddings in online mode; None = batches are embeddings
        self.image_encoder: Callable[[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def from_hparams(cls, hparams: dict[str, Any]) -> MultimodalTeacher:
        """The untrained T_x that ``teacher.json``'s hparams describe (its state dict fills it)."""
        known = {f.name for f in fields(TxSettings)}
        settings = TxSettings(**{k: v for k, v in hparams.items() if k in known},
                              optim=OptimConfig.model_validate(hparams.get("optim_cfg") or {}))
        data = {k: v for k, v in hparams.items() if k not in known and k != "optim_cfg"}
        return cls(settings, **data)

    def check_text_modes(self) -> None:
        """``wn`` samples retrieve from the relaxed bank: refuse to run without one."""
        if self.bank is None and any(bool((getattr(self, f"{s}_modes") == WN).any()) for s in ("train", "val")):
            raise _no_bank_error()

    def on_fit_start(self) -> None:
        self.check_text_modes()

    def init_bank(self, bank: torch.Tensor | None) -> None:
        if self.bank is not None and bank is not None:
            self.bank = TextBank(bank, learnable=self.hparams.bank_learnable)
            if torch.allclose(bank.float().norm(dim=1), torch.ones(len(bank)), atol=1e-5):
                # already unit-norm (the relax stage's bank): keep it bit for bit, not a re-normalised
                # copy, so `bank: fixed` is exactly n_pretrained (Table 3) and the regulariser's anchor too
                with torch.no_grad():
                    self.bank.embeddings.copy_(bank.float())
                    self.bank.pretrained.copy_(bank.float())

    # -- text ----------------------------------------------------------------------------------
    def text_embeddings(
        self, image_emb: torch.Tensor, targets: torch.Tensor, modes: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        gt, noisy, wn = modes == GT, modes == NOISE, modes == WN
        if image_emb.device.type != "cpu" and self.bank is not None:
            # on an accelerator: every row's candidates, then a select (boolean indexing and
            # wn.any() would each make the host wait for the device, every step)
            text = torch.where(gt[:, None], self.class_text[targets].to(image_emb.dtype), torch.zeros_like(image_emb))
            text = torch.where(noisy[:, None], self.class_text[noise].to(text.dtype), text)
            found = retrieve(image_emb, self.bank.embeddings, self.hparams.temperature).to(text.dtype)
            return torch.where(wn[:, None], found, text)
        text = torch.zeros_like(image_emb)
        text[gt] = self.class_text[targets[gt]].to(text.dtype)
        text[noisy] = self.class_text[noise[noisy]].to(text.dtype)
        if wn.any():
            if self.bank is None:
                raise _no_bank_error()
            text[wn] = retrieve(image_emb[wn], self.bank.embeddings, self.hparams.temperature).to(text.dtype)
        return text

    def fuse(self, image_emb: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if self.hparams.text_only:
            image_emb = torch.zeros_like(image_emb)
        return torch.cat([image_emb, text], dim=1)

    def logits(self, image_emb: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor, split: str,
               batch_idx: int | None = None) -> torch.Tensor:
        """T_x logits for samples of ``split`` (their text modes are looked up by index)."""
        modes, noise = self.sample_text(indices, split, batch_idx)
        return self.head(self.fuse(image_emb, self.text_embeddings(image_emb, targets, modes, noise)))

    def sample_text(self, indices: torch.Tensor, split: str, batch_idx: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        modes, noise = getattr(self, f"{split}_modes")[indices], getattr(self, f"{split}_noise")[indices]
        if batch_idx is not None and self.hparams.get("text_split", "sample") == "batch":
            # the released code's split: gt for the first int(#batches · p) batches of the epoch, wn after
            batches = self.trainer.num_training_batches if split == "train" else self.trainer.num_val_batches[0]
            mode = GT if batch_idx < int(batches * self.hparams.gt_share) else WN
            modes = torch.where((modes == GT) | (modes == WN), torch.full_like(modes, mode), modes)
        return modes, noise

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        """Logits from the 2d fused input (what attribution differentiates)."""
        return self.head(fused)

    # -- training ------------------------------------------------------------------------------
    def _embed(self, batch_inputs: torch.Tensor) -> torch.Tensor:
        if self.image_encoder is None:
            return batch_inputs.float()
        with torch.no_grad():
            return self.image_encoder(batch_inputs).float()

    def training_step(self, batch, batch_idx):
        inputs, targets, indices = batch
        image_emb = self._embed(inputs)
        modes, noise = self.sample_text(indices, "train", batch_idx)
        if self.hparams.get("label_noise", False):
            targets = torch.where(modes == NOISE, noise, targets)
        text = self.text_embeddings(image_emb, targets, modes, noise)
        logits = self.head(self.fuse(image_emb, text))
        wn = modes == WN
        bank = self.bank
        # a batch without relaxed text leaves the bank alone: no regulariser, no step (decay, momentum)
        self._bank_idle = bank is not None and bank.learnable and not bool(wn.any())
        terms = multimodal_teacher_loss(
            logits,
            targets,
            self.class_text[targets[wn]],
            text[wn],
            bank.embeddings if bank is not None and bank.learnable and not self._bank_idle else None,
            bank.pretrained if bank is not None else None,
            lambda_hier=self.hparams.lambda_hier,
            lambda_cos=self.hparams.lambda_cos,
        )
        self.log_train({f"train/{k}": v for k, v in terms.items()})  # epoch means on an accelerator
        return terms["loss"]

    def on_after_backward(self) -> None:
        if getattr(self, "_bank_idle", False):
            self.bank.embeddings.grad = None  # SGD skips a parameter without a gradient

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # the relaxed bank lives on the unit sphere: project back after every optimiser step
        if self.bank is not None and self.bank.learnable and not getattr(self, "_bank_idle", False):
            self.bank.renormalize_()
            if self.hparams.get("bank_fp16", False):
                with torch.no_grad():
                    self.bank.embeddings.copy_(self.bank.embeddings.half().float())

    def validation_step(self, batch, batch_idx):
        inputs, targets, indices = batch
        self.store_validation(self.logits(self._embed(inputs), targets, indices, "val", batch_idx), targets, indices)

    def configure_optimizers(self):
        bank_params = [self.bank.embeddings] if self.bank is not None and self.bank.learnable else []
        groups = [{"params": list(self.head.parameters())}]
        if bank_params:
            groups.append({"params": bank_params, "weight_decay": self.hparams.bank_weight_decay})
        return optim.configure(groups, self.optim_cfg)


def _no_bank_error() -> UserError:
    return UserError(
        "multimodal teacher has 'wn' samples in multimodal.proportions but no relaxation bank; "
        "run `relaxkd relax` first or drop 'wn' from multimodal.proportions"
    )
