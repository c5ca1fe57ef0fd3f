"""The CLIP encoder: embed images, texts and words (clip/loading.py builds it).

Every embedding leaving this module is an L2-normalised float tensor ``[N, d]`` (docs/method.md §2).
"""
from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Sequence

import open_clip
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from relaxkd.clip.prompt_tokens import PromptTokenizer, _tokenized_batches
from relaxkd.clip.templates import TEMPLATES, check_templates, word_to_text
from relaxkd.clip.text_length import TextForward
from relaxkd.console import progress_bar
from relaxkd.errors import UserError

_PRECISIONS = {
    "auto": "auto",
    "fp32": "fp32", "32": "fp32", "32-true": "fp32",
    "bf16": "bf16", "bf16-mixed": "bf16",
    "fp16": "fp16", "16": "fp16", "16-mixed": "fp16",
}


def check_precision(precision: str) -> str:
    key = str(precision).strip().lower()
    if key not in _PRECISIONS:
        raise UserError(
            f"unknown CLIP precision {precision!r}; valid: auto, fp32, bf16, fp16"
        )
    return _PRECISIONS[key]


def check_device(device: str | torch.device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise UserError(f"invalid device {device!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {str(device)!r} requested but CUDA is not available; use device=cpu")
    return device


class ClipEncoder:
    """A frozen open_clip model with its tokenizer and test-time transform.

    Deliberately not an ``nn.Module``: a Lightning module holding it must not save CLIP in its
    checkpoints nor hand it to DDP. Move it with :meth:`to`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Callable,
        preprocess: Callable,
        *,
        model_name: str,
        weights: str,
        is_random: bool,
        precision: str = "auto",
    ):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self._preprocess = preprocess
        self.model_name = model_name
        self.weights = weights
        self.is_random = is_random
        self.precision = check_precision(precision)
        preprocess_cfg = open_clip.get_model_preprocess_cfg(model)
        size = preprocess_cfg["size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        self._image_hw: tuple[int, int] = (int(size[0]), int(size[1]))
        self.image_size: int | tuple[int, int] = (
            self._image_hw[0] if self._image_hw[0] == self._image_hw[1] else self._image_hw
        )
        self.mean: tuple[float, ...] = tuple(float(m) for m in preprocess_cfg["mean"])
        self.std: tuple[float, ...] = tuple(float(s) for s in preprocess_cfg["std"])
        self.context_length: int | None = getattr(tokenizer, "context_length", None)
        self.embed_dim: int = self._find_embed_dim()
        #: the text tower at each batch's own token length (clip/text_length.py)
        self.text_forward = TextForward(self.model, tokenizer, model_name)

    # -- description ---------------------------------------------------------------------------

    def describe(self) -> str:
        """Human-readable model description for reports, e.g. ``random-weight CLIP relaxkd-tiny``."""
        if self.is_random:
            return f"random-weight CLIP {self.model_name}"
        if self.weights in ("none", ""):
            return f"CLIP {self.model_name}"
        return f"CLIP {self.model_name} ({self.weights})"

    def __repr__(self) -> str:
        return (
            f"ClipEncoder({self.describe()}, d={self.embed_dim}, image={self.image_size}, "
            f"device={self.device}, precision={self.precision})"
        )

    # -- device and precision ------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> ClipEncoder:
        self.model.to(check_device(device))
        return self

    def _autocast(self) -> contextlib.AbstractContextManager:
        # Half precision only on CUDA: on the CPU it is rarely faster and costs accuracy.
        device = self.device
        if device.type != "cuda" or self.precision == "fp32":
            return contextlib.nullcontext()
        if self.precision == "auto":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _find_embed_dim(self) -> int:
        output_dim = getattr(getattr(self.model, "visual", None), "output_dim", None)
        if isinstance(output_dim, int):
            return output_dim
        with torch.inference_mode():
            return int(self.model.encode_text(self.tokenizer(["a"]).to(self.device)).shape[1])

    # -- images --------------------------------------------------------------------------------

    def preprocess_transform(self) -> Callable:
        """CLIP test-time transform (Resize bicubic, CenterCrop, ToTensor, Normalize) for datasets."""
        return self._preprocess

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` images normalised with CLIP stats -> ``[B,d]`` unit-norm float32.

        Runs under ``no_grad`` rather than ``inference_mode`` so the result can feed a trainable
        head inside a training loop. Images of another size (e.g. a student's augmented batch)
        are resized to the model's input size. The result is on the input's device.
        """
        input_device = images.device
        images = images.to(self.device, non_blocking=True)
        if tuple(images.shape[-2:]) != self._image_hw:
            images = F.interpolate(
                images.float(), size=self._image_hw, mode="bicubic", align_corners=False,
                antialias=True,
            )
        with torch.no_grad(), self._autocast():
            features = self.model.encode_image(images)
            return F.normalize(features.float(), dim=-1).to(input_device)

    def encode_dataset(
        self,
        dataset: Dataset,
        batch_size: int = 256,
        num_workers: int = 0,
        progress: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embed a dataset of ``(image, label, index)`` items already CLIP-preprocessed.

        Returns ``(embeddings [N,d] float16, labels [N], indices [N])`` on the CPU, sorted by index.
        """
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            pin_memory=self.device.type == "cuda",
        )
        embeddings, labels, indices = [], [], []
        with progress_bar(len(dataset), "CLIP image embeddings", "img", enabled=progress) as bar:
            for images, batch_labels, batch_indices in loader:
                embeddings.append(self.encode_images(images).to("cpu", torch.float16))
                labels.append(torch.as_tensor(batch_labels).reshape(-1))
                indices.append(torch.as_tensor(batch_indices).reshape(-1))
                bar.update(len(images))
        if not embeddings:
            empty = torch.empty(0, dtype=torch.long)
            return torch.empty(0, self.embed_dim, dtype=torch.float16), empty, empty.clone()
        order = torch.argsort(torch.cat(indices))
        return torch.cat(embeddings)[order], torch.cat(labels)[order], torch.cat(indices)[order]

    # -- texts ---------------------------------------------------------------------------------

    def _encode_rows(self, tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Token rows ``[N, context]`` -> raw float32 text features ``[N, d]`` on the CPU.

        Rows are sorted by the length they need and batched with their neighbours, each batch cut
        to its longest row (``TextForward``), then put back in their order.
        """
        lengths = self.text_forward.lengths(tokens)
        order = torch.argsort(lengths, stable=True)
        out = torch.empty(len(tokens), self.embed_dim)
        for start in range(0, len(tokens), batch_size):
            rows = order[start : start + batch_size]
            batch = tokens[rows, : int(lengths[rows].max())].to(self.device, non_blocking=True)
            with self._autocast():
                out[rows] = self.text_forward(batch).float().cpu()
        return out

    def encode_texts(
        self, texts: Sequence[str], batch_size: int = 1024, progress: bool = False
    ) -> torch.Tensor:
        """Texts -> ``[N,d]`` unit-norm float32 embeddings on the CPU.

        ``batch_size`` counts texts per forward pass; texts are sorted by length within windows of
        ``_WINDOW_BATCHES`` batches.
        """
        texts = list(texts)
        # Allocated outside inference mode so callers get an ordinary tensor (e.g. to build an
        # nn.Parameter from it); filling it in place under inference mode is allowed.
        out = torch.empty(len(texts), self.embed_dim)
        window = batch_size * _WINDOW_BATCHES
        with torch.inference_mode(), progress_bar(len(texts), "CLIP text embeddings", "text", enabled=progress) as bar:
            for start in range(0, len(texts), window):
                chunk = texts[start : start + window]
                features = self._encode_rows(self.tokenizer(chunk), batch_size)
                out[start : start + len(chunk)] = F.normalize(features, dim=-1)
                bar.update(len(chunk))
        return out

    def embed_words(
        self,
        words: Sequence[str],
        templates: Sequence[str] = TEMPLATES,
        batch_size: int = 1024,
        progress: bool = True,
    ) -> torch.Tensor:
        """Words -> ``[V,d]``: normalise(mean over templates of the raw text embeddings).

        Algorithm 1 (line 10) and the authors' code average the templates' CLIP text features and
        then normalise once; the per-template features are not normalised first.

        Underscores become spaces. ``batch_size`` counts prompts per forward pass; memory stays
        bounded by it whatever the number of words. With ``progress``, a table of more than
        ``_ESTIMATE_ABOVE`` prompts first says how long it will take here (timed on a sample).
        """
        templates = check_templates(templates)
        texts = [word_to_text(str(word)) for word in words]
        n_templates = len(templates)
        window_words = max(1, batch_size * _WINDOW_BATCHES // n_templates)
        tokenize = PromptTokenizer(self.tokenizer, templates)
        out = torch.empty(len(texts), self.embed_dim)
        with torch.inference_mode():
            if progress and len(texts) * n_templates > _ESTIMATE_ABOVE:
                _say(self._table_estimate(texts, tokenize, batch_size))
            with progress_bar(len(texts), "CLIP word embeddings", "word", enabled=progress) as bar:
                start = 0
                # On an accelerator, tokenising the next window in a thread hides the GPU time; on
                # the CPU that thread would fight torch's own threads for the cores, so stay sequential.
                for tokens in _tokenized_batches(tokenize, texts, window_words, background=self.device.type != "cpu"):
                    n_words = len(tokens) // n_templates
                    features = self._encode_rows(tokens, batch_size).view(n_words, n_templates, -1).mean(dim=1)
                    out[start : start + n_words] = F.normalize(features, dim=-1)
                    start += n_words
                    bar.update(n_words)
        return out

    def _table_estimate(self, texts: Sequence[str], tokenize: PromptTokenizer, batch_size: int) -> str:
        """How long embedding ``texts`` with every template takes on this device, timed on a sample of
        words spread over the table. The time per token of the sample's batches, times the tokens the
        table's batches hold (the table's batches hold prompts of one length; the sample's cannot)."""
        n_templates = len(tokenize.templates)
        sample_words = max(1, _ESTIMATE_SAMPLE // n_templates)
        sample = list(texts[:: max(1, len(texts) // sample_words)][:sample_words])
        started = time.perf_counter()
        tokens = tokenize(sample)
        sample_batch = max(1, min(batch_size, _ESTIMATE_SAMPLE // 4))
        self._encode_rows(tokens, sample_batch)
        seconds = max(time.perf_counter() - started, 1e-9)
        lengths = self.text_forward.lengths(tokens).sort().values
        batched_tokens = sum(len(b) * int(b.max()) for b in lengths.split(sample_batch))
        n_prompts = len(texts) * n_templates
        table_seconds = seconds / batched_tokens * float(lengths.float().mean()) * n_prompts
        return (f"CLIP word embeddings: {len(texts):,} words x {n_templates} templates = {n_prompts:,} prompts "
                f"with {self.describe()} on {self.device}: about {_duration(table_seconds)} "
                f"({n_prompts / table_seconds:,.0f} prompts/s, timed on {len(tokens)} of them)")


#: batches tokenised together and sorted by length, so that each batch holds prompts of one length
_WINDOW_BATCHES = 16
#: word tables above this many prompts (the noun table) print their estimated time first
_ESTIMATE_ABOVE, _ESTIMATE_SAMPLE = 50_000, 512


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _say(message: str) -> None:
    print(f"[relaxkd] {message}", file=sys.stderr, flush=True)
