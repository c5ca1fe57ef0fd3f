"""CLIP's text tower run at each batch's own token length instead of the tokenizer's full context.

open_clip pads every prompt to the context length (77 tokens) and ``encode_text`` runs the text
transformer on all of it, though prompts are mostly 8-15 tokens long. In CLIP's text transformer a
position attends only to itself and earlier positions (the causal mask) and the embedding is read
at the end-of-text token, so nothing after that token can change the result: cutting a batch just
after its latest end-of-text token and running the same layers with the first positional
embeddings and the matching corner of the causal mask gives ``encode_text``'s embeddings (up to
float rounding) at a fraction of the work. This follows ``CLIP.encode_text``,
``TextTransformer.forward``/``_embeds`` and ``text_global_pool`` of open_clip (model.py,
transformer.py).

Where that argument does not hold (no causal mask, pooling other than at the end-of-text token, a
text tower other than open_clip's ``TextTransformer`` such as a Hugging Face one), the shortened
forward is only used if it matches ``encode_text`` on probe prompts at load time; otherwise texts
run at the full length and one line says so. The probe check runs for every model, as a guard
against an open_clip release that changes what ``encode_text`` does.
"""
from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CustomTextCLIP
from open_clip.transformer import TextTransformer, text_global_pool

#: prompts of many lengths, non-ASCII ones, and one longer than any context (truncated)
PROBE_TEXTS = (
    "a",
    "itap of a dog.",
    "a photo of the small café.",
    "art of the naïve Ångström — 東京タワー.",
    "a bad photo of the St. John's wort in a video game.",
    "a photo of the large " + "very " * 80 + "long name.",
)
#: largest difference (unit-norm embeddings) between the shortened forward and ``encode_text`` on the
#: probes that still counts as the same computation; padding that leaks into the result is ~1e-1
TOLERANCE = 1e-4
#: the end-of-text pooling open_clip's text transformers can do
_EOT_POOLING = ("argmax", "eos")


class TextForward:
    """Text embeddings of token rows, each batch cut to the longest length any of its rows needs.

    ``lengths(tokens)`` says how many leading tokens each row needs (the full context when the
    shortened forward is off); call the object on rows cut to the batch's longest such length.
    ``full_length_reason`` is None when the shortened forward is in use, else why not.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Callable, name: str):
        self.model = model
        tokens = tokenizer(list(PROBE_TEXTS))
        self.context_length = int(tokens.shape[1])
        self._pad_id = int(tokenizer([""])[0, -1])
        self._tower, self._pooling, self._eos_id, unproven = _open_clip_text(model)
        self.full_length_reason: str | None = None
        difference = _probe_difference(self, tokens)
        if difference is None or difference > TOLERANCE:
            found = "fails" if difference is None else f"differs from encode_text by {difference:.2g}"
            because = f"{unproven}, and the" if unproven else "the"
            self.full_length_reason = f"{because} shortened forward {found} on probe prompts"
            print(f"[relaxkd] CLIP {name}: texts encoded at the full {self.context_length} tokens "
                  f"({self.full_length_reason})", file=sys.stderr, flush=True)

    def lengths(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[N]`` long: the leading tokens each row of ``[N, context]`` needs."""
        n_rows, context = tokens.shape
        if self.full_length_reason is not None or n_rows == 0:
            return torch.full((n_rows,), context, dtype=torch.long)
        # up to the last token that is not padding; past the pooled token even if it is padding
        not_pad = (tokens != self._pad_id).long()
        needed = torch.where(not_pad.any(dim=1), context - not_pad.flip(1).argmax(dim=1), 1)
        if self._pooling == "argmax":
            needed = torch.maximum(needed, tokens.argmax(dim=1) + 1)
        elif self._pooling == "eos":
            needed = torch.maximum(needed, (tokens == self._eos_id).long().argmax(dim=1) + 1)
        return needed

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """Raw text features of rows cut to at least their ``lengths``."""
        if self.full_length_reason is not None or self._tower is None:
            return self.model.encode_text(tokens)
        return _shortened_forward(self._tower, self._pooling, self._eos_id, tokens)


def _open_clip_text(model: torch.nn.Module) -> tuple[torch.nn.Module | None, str, int | None, str | None]:
    """``(module holding open_clip's text transformer pieces or None, pooling, eos id, why the
    shortened forward is not provably encode_text's or None)``.

    ``CLIP`` keeps the pieces on itself, ``CustomTextCLIP`` on its ``TextTransformer``; both name
    them alike (token_embedding, positional_embedding, transformer, ln_final, text_projection,
    attn_mask). They are read at call time: moving the model replaces buffers such as the mask.
    """
    kind = type(model)
    if kind.encode_text is CLIP.encode_text:
        tower, pooling, eos_id = model, model.text_pool_type, getattr(model, "text_eos_id", None)
    elif kind.encode_text is CustomTextCLIP.encode_text:
        tower = model.text
        if type(tower).forward is not TextTransformer.forward:
            return None, "", None, f"its text tower is {type(tower).__name__}, not open_clip's TextTransformer"
        if getattr(tower, "cls_emb", None) is not None or getattr(tower, "use_pad_mask", False):
            return None, "", None, "its text transformer appends a class token or masks padding"
        pooling, eos_id = tower.pool_type, tower.eos_id
    else:
        return None, "", None, f"{kind.__name__}.encode_text is not open_clip's CLIP or CustomTextCLIP one"
    if tower.attn_mask is None:
        return tower, pooling, eos_id, "its text transformer has no causal mask"
    if pooling not in _EOT_POOLING:
        return tower, pooling, eos_id, f"it pools the {pooling!r} token, not the end-of-text one"
    return tower, pooling, eos_id, None


def _shortened_forward(tower: torch.nn.Module, pooling: str, eos_id: int | None, tokens: torch.Tensor) -> torch.Tensor:
    """``CLIP.encode_text`` on ``[N, L]`` tokens with ``L`` at most the context length."""
    length = tokens.shape[1]
    cast_dtype = tower.transformer.get_cast_dtype()
    x = tower.token_embedding(tokens).to(cast_dtype) + tower.positional_embedding[:length].to(cast_dtype)
    mask = None if tower.attn_mask is None else tower.attn_mask[:length, :length]
    if hasattr(tower.transformer, "batch_first"):  # open_clip >= 2.26 takes [N, L, D] and permutes itself
        x = tower.transformer(x, attn_mask=mask)
    else:
        x = tower.transformer(x.permute(1, 0, 2), attn_mask=mask).permute(1, 0, 2)
    x = tower.ln_final(x)
    pooled = text_global_pool(x, tokens, pooling, **({"eos_token_id": eos_id} if pooling == "eos" else {}))
    if isinstance(pooled, tuple):  # open_clip < 2.27 also returned the tokens
        pooled = pooled[0]
    projection = tower.text_projection
    if projection is None:
        return pooled
    return projection(pooled) if isinstance(projection, torch.nn.Linear) else pooled @ projection


def _probe_difference(forward: TextForward, tokens: torch.Tensor) -> float | None:
    """Largest difference between the shortened forward and ``encode_text`` on the probe rows, each
    at its own length and the untruncated ones in one batch cut to their longest. None when the
    shortened forward fails."""
    device = next(forward.model.parameters()).device
    tokens = tokens.to(device)
    lengths = forward.lengths(tokens.cpu())
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # TF32 on a GPU would blur the comparison
    try:
        with torch.inference_mode():
            expected = F.normalize(forward.model.encode_text(tokens).float(), dim=-1)
            try:
                alone = torch.cat([forward(row[None, :n]) for row, n in zip(tokens, lengths.tolist())])
                mixed = (lengths < forward.context_length).to(device)
                together = forward(tokens[mixed, : int(lengths[mixed.cpu()].max())])
            except Exception:  # noqa: BLE001 - any failure means: run at the full length
                return None
            alone_diff = F.normalize(alone.float(), dim=-1) - expected
            together_diff = F.normalize(together.float(), dim=-1) - expected[mixed]
    finally:
        torch.set_float32_matmul_precision(precision)
    return max(float(alone_diff.abs().max()), float(together_diff.abs().max()))
