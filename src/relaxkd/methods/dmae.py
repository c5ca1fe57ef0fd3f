"""DMAE: masked autoencoders as efficient knowledge distillers (Bai et al., CVPR 2023).

Reference: ``UCSC-VLAA/DMAE`` (``models_mae_distill.py``, ``main_distill.py``,
``engine_distill.py``, ``main_finetune.py``, ``pretrain.sh``, ``finetune.sh``). Two stages:

1. ``dmae-pretrain`` (:class:`DMAEPretrainer`): MAE pre-training of the ViT student. Per sample a
   random 75 % of the patches is masked (argsort of uniform noise, as the reference's
   ``random_masking``); the encoder sees the visible patches; a light decoder reconstructs the
   masked ones (per-patch normalised pixels, MSE averaged over masked patches). A projection
   head (``fc-1layer``: one Linear) maps the student's intermediate block output (block 8 of 12,
   ``aligned_blks_indices 8``) on the cls token and visible patches to the teacher's width, and
   ``L1(normalize(teacher), normalize(projection(student)))`` aligns it with the frozen teacher's
   intermediate features at the same positions; loss = reconstruction + alignment.
2. fine-tuning (the ``distill`` stage with ``distill.loss=dmae``): supervised training of the
   pre-trained ViT with label-smoothed cross-entropy (``main_finetune.py``'s smoothing 0.1); no
   teacher runs.

Deviations (docs/reproduction.md): the teacher is one of this harness's teachers (a ResNet or any
registered backbone) rather than an MAE ViT-L, so it sees the whole image and its feature map
(``teacher_layer``, default the last spatial stage) is average-pooled to the student's patch grid
and read at the visible positions, with the global average standing for the cls token (a ViT
teacher's tokens are read directly); the student keeps timm's learnable positional embedding
(MAE fixes a sin-cos one; the decoder's is sin-cos here too); pre-training uses AdamW (β 0.9/0.95,
lr = blr·batch/256, weight decay 0.05, linear warm-up then half-cycle cosine, per epoch rather than
per step); fine-tuning uses distill.optim (the ``dmae`` trial sets the reference's AdamW recipe,
relaxkd.trials.DMAE_FINETUNE) without mixup, cutmix, random erasing, drop-path or layer-wise decay.
"""
from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from relaxkd.errors import UserError
from relaxkd.methods.base import KDMethod, MethodParams, Outputs, Step, register_method
from relaxkd.methods.features import FeatureTap
from relaxkd.names import DMAE_PRETRAIN_STAGE, TX


class DMAEParams(MethodParams):
    #: fine-tuning (finetune.sh / main_finetune.py): label smoothing, layer-wise lr decay (the
    #: script leaves main_finetune.py's default 0.7), drop path, mixup/cutmix, random erasing
    ce_weight: float = Field(1.0, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    layer_decay: float = Field(0.7, gt=0, le=1)
    drop_path: float = Field(0.1, ge=0, lt=1)
    mixup: float = Field(0.8, ge=0)
    cutmix: float = Field(1.0, ge=0)
    mixup_prob: float = Field(1.0, ge=0, le=1)
    mixup_switch_prob: float = Field(0.5, ge=0, le=1)
    random_erasing: float = Field(0.25, ge=0, le=1)
    #: the table1 trial's fine-tuning epochs (finetune.sh --epochs 100; its distill.optim.epochs)
    finetune_epochs: int = Field(100, gt=0)
    #: pre-training (pretrain.sh / main_distill.py)
    mask_ratio: float = Field(0.75, gt=0, lt=1)
    norm_pix_loss: bool = True
    #: student block whose output is aligned (0-based); null = 2/3 of the depth (8 of 12)
    student_block: int | None = Field(None, ge=0)
    #: teacher submodule whose output is aligned; null = the last spatial stage (layer4 / features.2 / last block)
    teacher_layer: str | None = None
    distill_loss: Literal["L1", "L2"] = "L1"
    distill_weight: float = Field(1.0, ge=0)
    decoder_dim: int = Field(512, gt=0)
    decoder_depth: int = Field(8, gt=0)
    decoder_heads: int = Field(16, gt=0)
    pretrain_epochs: int = Field(100, gt=0)
    pretrain_batch_size: int = Field(128, gt=0)
    pretrain_blr: float = Field(1.5e-4, gt=0)
    pretrain_weight_decay: float = Field(0.05, ge=0)
    pretrain_warmup_epochs: int = Field(40, ge=0)


@register_method("dmae")
class DMAE(KDMethod):
    """Fine-tuning half of DMAE (the pre-training is :class:`DMAEPretrainer`'s stage)."""

    Params = DMAEParams
    stages = (DMAE_PRETRAIN_STAGE,)  # the student starts from its pre-trained weights
    runs_teachers = False
    teacher_features = ("dmae",)  # the pre-training aligns teacher features: cached logits cannot serve it
    students = ("vit",)

    @classmethod
    def check_teachers(cls, names: list[str]) -> None:
        if len(names) != 1 or names[0] == TX:
            raise UserError(
                f"KD method 'dmae' aligns the features of one image teacher; set e.g. distill.teachers=[strong] "
                f"(got [{', '.join(names)}])"
            )

    def teacher_outputs(self, images: Tensor, step_info: dict[str, Any]) -> dict[str, Outputs]:
        return {}  # fine-tuning runs no teacher

    def prepare_student(self, student: nn.Module) -> None:
        """Stochastic depth rising linearly to ``drop_path`` over the blocks (timm's drop_path_rate)."""
        from timm.layers import DropPath  # noqa: PLC0415 - timm only on this path (ViTs, timm's RandAugment): start-up

        blocks = list(getattr(student, "blocks", []))
        for block, rate in zip(blocks, torch.linspace(0, self.params.drop_path, len(blocks)).tolist()):
            block.drop_path1 = block.drop_path2 = DropPath(rate) if rate > 0 else nn.Identity()

    def student_param_groups(self, student: nn.Module, weight_decay: float) -> list[dict[str, Any]] | None:
        """main_finetune.py's ``param_groups_lrd``: timm's layer-decay groups (no decay on biases,
        norms, tokens and positional embedding; lr scaled layer_decay^(depth - layer))."""
        from timm.optim import param_groups_layer_decay  # noqa: PLC0415 - timm only on this path (ViTs, timm's RandAugment): start-up

        return param_groups_layer_decay(student, weight_decay, no_weight_decay_list=student.no_weight_decay(),
                                        layer_decay=self.params.layer_decay)

    def mix_batch(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Random erasing (pixel mode, per image) then timm's Mixup/CutMix with label smoothing, as
        main_finetune.py; an odd last batch is not mixed, its targets only smoothed."""
        from timm.data.mixup import Mixup, mixup_target  # noqa: PLC0415 - timm only on this path (ViTs, timm's RandAugment): start-up
        from timm.data.random_erasing import RandomErasing  # noqa: PLC0415 - timm only on this path (ViTs, timm's RandAugment): start-up

        p = self.params
        if p.random_erasing > 0:
            images = RandomErasing(p.random_erasing, mode="pixel", max_count=1, device=images.device)(images.clone())
        if (p.mixup > 0 or p.cutmix > 0) and len(images) % 2 == 0:
            mixup = Mixup(mixup_alpha=p.mixup, cutmix_alpha=p.cutmix, prob=p.mixup_prob, switch_prob=p.mixup_switch_prob,
                          mode="batch", label_smoothing=p.label_smoothing, num_classes=self.context.num_classes)
            return mixup(images, targets)
        return images, mixup_target(targets, self.context.num_classes, 1.0, p.label_smoothing)

    def forward(self, step: Step) -> dict[str, Tensor]:
        if step.targets.ndim == 2:  # soft targets of mix_batch: timm's SoftTargetCrossEntropy
            ce = torch.sum(-step.targets * F.log_softmax(step.student.logits, dim=-1), dim=-1).mean()
        else:
            ce = F.cross_entropy(step.student.logits, step.targets, label_smoothing=self.params.label_smoothing)
        return {"loss": self.params.ce_weight * ce, "ce": ce, "kd": ce.new_zeros(())}


# -- pre-training ----------------------------------------------------------------------------------


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> Tensor:
    """Fixed 2-D sin-cos positional embedding ``[grid_h·grid_w, dim]`` (MAE's get_2d_sincos_pos_embed)."""
    if dim % 4:
        raise UserError(f"DMAE decoder_dim must be a multiple of 4, got {dim}")

    def one_axis(d: int, pos: Tensor) -> Tensor:
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2.0))
        out = pos.flatten()[:, None].double() * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    gy, gx = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    return torch.cat([one_axis(dim // 2, gx), one_axis(dim // 2, gy)], dim=1).float()


def random_masking(batch: int, length: int, mask_ratio: float, device, generator=None) -> tuple[Tensor, Tensor, Tensor]:
    """The reference's per-sample masking: ``ids_keep`` [B, K], ``mask`` [B, L] (1 = removed), ``ids_restore``."""
    keep = int(length * (1 - mask_ratio))
    noise = torch.rand(batch, length, device=device, generator=generator)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    mask = torch.ones(batch, length, device=device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return ids_keep, mask, ids_restore


def patchify(images: Tensor, patch: int) -> Tensor:
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def reconstruction_loss(images: Tensor, pred: Tensor, mask: Tensor, patch: int, norm_pix: bool) -> Tensor:
    """``forward_loss``: MSE per patch (optionally on per-patch normalised pixels), mean over masked patches."""
    target = patchify(images, patch)
    if norm_pix:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


def alignment_loss(teacher: Tensor, student_projected: Tensor, kind: str = "L1") -> Tensor:
    """``forward_distillation_loss_embedding`` with a projection head: L1/L2 of the normalised features."""
    t, s = F.normalize(teacher.detach(), dim=-1), F.normalize(student_projected, dim=-1)
    return F.l1_loss(t, s) if kind == "L1" else F.mse_loss(t, s)


def default_teacher_layer(model: nn.Module) -> str:
    if hasattr(model, "layer4"):
        return "layer4"
    if hasattr(model, "blocks"):
        return f"blocks.{len(model.blocks) - 1}"
    if hasattr(model, "features"):  # TinyCNN: the last conv block before pooling
        convs = [n for n, m in model.features.named_children() if any(isinstance(x, nn.Conv2d) for x in m.modules())]
        return f"features.{convs[-1]}"
    raise UserError(f"cannot find a spatial feature layer in {type(model).__name__}; set distill.params.teacher_layer")


def teacher_tokens(feature: Tensor, grid: tuple[int, int], ids_keep: Tensor, prefix: int = 1) -> Tensor:
    """Teacher features at the cls position and the visible patches: ``[B, 1 + K, C]``.

    A feature map ``[B, C, h, w]`` is average-pooled to the student's patch grid (its global mean
    is the cls position); ViT tokens ``[B, prefix + L, C]`` are read directly.
    """
    if feature.dim() == 4:
        pooled = F.adaptive_avg_pool2d(feature, grid).flatten(2).transpose(1, 2)  # [B, L, C]
        cls = feature.mean(dim=(2, 3)).unsqueeze(1)
    elif feature.dim() == 3:
        cls, pooled = feature[:, :1], feature[:, prefix:]
        if pooled.shape[1] != grid[0] * grid[1]:
            raise UserError(f"the teacher's {pooled.shape[1]} tokens do not match the student's {grid[0]}x{grid[1]} patches")
    else:
        raise UserError(
            f"DMAE needs a spatial teacher feature (got shape {tuple(feature.shape)}); set distill.params.teacher_layer"
        )
    visible = torch.gather(pooled, 1, ids_keep.unsqueeze(-1).expand(-1, -1, pooled.shape[-1]))
    return torch.cat([cls, visible], dim=1)


class _FrozenTeacher(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> _FrozenTeacher:
        return super().train(False)


class DMAEPretrainer(L.LightningModule):
    """MAE pre-training of a timm ViT with feature distillation from a frozen teacher."""

    def __init__(self, student: nn.Module, teacher: nn.Module, params: DMAEParams, *, teacher_stats_fn=None):
        super().__init__()
        from timm.models.vision_transformer import Block  # noqa: PLC0415 - timm only on this path (ViTs, timm's RandAugment): start-up

        self.params = params
        self.encoder = student
        depth = len(student.blocks)
        self.student_block = params.student_block if params.student_block is not None else (2 * depth) // 3
        if self.student_block >= depth:
            raise UserError(f"DMAE student_block {self.student_block} is out of range for a {depth}-block ViT")
        self.teacher = _FrozenTeacher(teacher)
        self.teacher_layer = params.teacher_layer or default_teacher_layer(teacher)
        self._teacher_tap = FeatureTap(self.teacher.model, [self.teacher_layer])
        self._teacher_prefix = getattr(teacher, "num_prefix_tokens", 1)
        self.teacher_stats_fn = teacher_stats_fn
        dim = student.embed_dim
        self.patch = student.patch_embed.patch_size[0]
        self.decoder_embed = nn.Linear(dim, params.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, params.decoder_dim))
        self.decoder_blocks = nn.ModuleList(
            [Block(params.decoder_dim, params.decoder_heads, 4.0, qkv_bias=True) for _ in range(params.decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(params.decoder_dim)
        self.decoder_pred = nn.Linear(params.decoder_dim, self.patch**2 * 3)
        torch.nn.init.normal_(self.mask_token, std=0.02)
        # the projection maps to the teacher's width, read from one probe batch
        size = self.patch * max(2, math.ceil(32 / self.patch))
        feature = self.teacher_features(torch.zeros(1, 3, size, size))
        self.projection = nn.Linear(dim, feature.shape[1] if feature.dim() == 4 else feature.shape[-1])
        self.history: list[dict[str, float]] = []
        self._sums: Tensor | None = None
        self.strict_loading = False  # the frozen teacher is not saved

    # -- the student's encoder on visible patches ------------------------------------------------
    def _pos_embed(self, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        from timm.layers import resample_abs_pos_embed  # noqa: PLC0415 - timm only on this path (ViTs, timm's RandAugment): start-up

        enc = self.encoder
        prefix = enc.num_prefix_tokens
        pos = resample_abs_pos_embed(enc.pos_embed, new_size=list(grid), num_prefix_tokens=prefix)
        return pos[:, :prefix], pos[:, prefix:]

    def encode(self, images: Tensor, ids_keep: Tensor) -> tuple[Tensor, Tensor]:
        """(aligned block output, final normalised tokens) for cls + visible patches."""
        enc = self.encoder
        x = enc.patch_embed(images)  # [B, gh, gw, D] (dynamic image size)
        b, gh, gw, d = x.shape
        cls_pos, patch_pos = self._pos_embed((gh, gw))
        x = x.reshape(b, gh * gw, d) + patch_pos
        x = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
        x = torch.cat([(enc.cls_token + cls_pos).expand(b, -1, -1), x], dim=1)
        aligned = None
        for i, block in enumerate(enc.blocks):
            x = block(x)
            if i == self.student_block:
                aligned = x
        return aligned, enc.norm(x)

    def decode(self, latent: Tensor, ids_restore: Tensor, grid: tuple[int, int]) -> Tensor:
        x = self.decoder_embed(latent)
        b, n, d = x.shape
        masks = self.mask_token.expand(b, ids_restore.shape[1] + 1 - n, -1)
        rest = torch.cat([x[:, 1:], masks], dim=1)
        rest = torch.gather(rest, 1, ids_restore.unsqueeze(-1).expand(-1, -1, d))
        pos = sincos_2d(d, *grid).to(x)
        x = torch.cat([x[:, :1], rest + pos.unsqueeze(0)], dim=1)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def teacher_features(self, images: Tensor) -> Tensor:
        x = self.teacher_stats_fn(images) if self.teacher_stats_fn is not None else images
        with torch.no_grad():
            self.teacher.model(x)
        return self._teacher_tap.collect()[self.teacher_layer].float()

    def losses(self, images: Tensor) -> dict[str, Tensor]:
        p = self.params
        b, _, h, w = images.shape
        if h % self.patch or w % self.patch:
            raise UserError(f"DMAE needs images whose size is a multiple of the ViT patch ({self.patch}); got {h}x{w}")
        grid = (h // self.patch, w // self.patch)
        ids_keep, mask, ids_restore = random_masking(b, grid[0] * grid[1], p.mask_ratio, images.device)
        aligned, latent = self.encode(images, ids_keep)
        recon = reconstruction_loss(images, self.decode(latent, ids_restore, grid), mask, self.patch, p.norm_pix_loss)
        target = teacher_tokens(self.teacher_features(images), grid, ids_keep, self._teacher_prefix)
        align = alignment_loss(target, self.projection(aligned), p.distill_loss)
        return {"loss": recon + p.distill_weight * align, "reconstruction": recon, "alignment": align}

    def training_step(self, batch, batch_idx):
        images = batch[0]
        terms = self.losses(images)
        self.log_dict({f"pretrain/{k}": v for k, v in terms.items()}, prog_bar=False)
        parts = torch.stack(
            [terms["loss"].detach(), terms["reconstruction"].detach(), terms["alignment"].detach(), images.new_tensor(1.0)]
        )
        self._sums = parts if self._sums is None else self._sums + parts
        return terms["loss"]

    def on_train_epoch_end(self) -> None:
        if self._sums is None:
            return
        sums = self.trainer.strategy.reduce(self._sums, reduce_op="sum") if self.trainer.world_size > 1 else self._sums
        loss, recon, align, n = sums.tolist()
        self.history.append({"epoch": self.current_epoch, "loss": loss / n, "reconstruction": recon / n, "alignment": align / n})
        self._sums = None

    def configure_optimizers(self):
        p = self.params
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad or name.startswith("teacher."):
                continue
            (no_decay if param.ndim <= 1 or name.endswith(".bias") or "token" in name or "pos_embed" in name else decay).append(
                param
            )
        batch = p.pretrain_batch_size * max(1, self.trainer.world_size if self.trainer else 1)
        lr = p.pretrain_blr * batch / 256
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": p.pretrain_weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=lr, betas=(0.9, 0.95),
        )
        epochs, warmup = p.pretrain_epochs, p.pretrain_warmup_epochs

        def factor(epoch: int) -> float:  # util/lr_sched.py, evaluated per epoch
            if epoch < warmup:
                return (epoch + 1) / (warmup + 1)
            return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / max(1, epochs - warmup)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["relaxkd_history"] = self.history
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teacher.")}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("relaxkd_history", []))

    def encoder_state(self) -> dict[str, Tensor]:
        """The pre-trained ViT (its classifier head untouched), for fine-tuning."""
        return {k: v.detach().cpu().contiguous() for k, v in self.encoder.state_dict().items()}
