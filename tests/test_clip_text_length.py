"""The CLIP text tower at each batch's own token length (clip/text_length.py) gives ``encode_text``'s
embeddings for open_clip's CLIP and CustomTextCLIP towers, and falls back to the full length (saying
so) where the shortcut is not exact. Random-weight models only."""
from __future__ import annotations

import json

import open_clip
import pytest
import torch
import torch.nn.functional as F

from relaxkd.clip import TEMPLATES, TINY_MODEL, ClipEncoder
from relaxkd.clip.loading import TINY_CONFIG

WORDS = [
    "a", "dog", "ice cream", "St. John's wort", "x-ray", "C++", "rock 'n' roll", "café au lait",
    "naïve Ångström", "東京タワー", "Ελλάδα", "jalapeño", "Mr.", "great white shark",
    "flowering quince of the large family of roses", "a " * 20 + "very long name that is truncated",
]
#: prompts of every length from one token up to (and past) ViT-B-32's 77-token context
PROMPTS = ["", "a", "dog"] + [t.format(w) for w in WORDS for t in TEMPLATES] + [
    "very " * n + "long" for n in (1, 3, 6, 12, 24, 48, 70, 74, 75, 76, 120)
]


def _encoder(model: torch.nn.Module, name: str) -> ClipEncoder:
    return ClipEncoder(model, open_clip.get_tokenizer(name), lambda image: image, model_name=name,
                       weights="none", is_random=True)


def _random_model(name: str, **kwargs) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return open_clip.create_model(name, **kwargs)


def _tiny_text_cfg(**changes) -> dict:
    return {**json.loads(TINY_CONFIG.read_text())["text_cfg"], **changes}


def _reference(encoder: ClipEncoder, texts: list[str]) -> torch.Tensor:
    """open_clip's own forward at the full context length, unit-norm."""
    with torch.inference_mode():
        return F.normalize(encoder.model.encode_text(encoder.tokenizer(texts)).float(), dim=-1)


class _LengthSpy:
    """The encoder's TextForward, recording the token length of every batch it runs."""

    def __init__(self, forward):
        self.forward, self.seen = forward, []

    def lengths(self, tokens):
        return self.forward.lengths(tokens)

    def __call__(self, tokens):
        self.seen.append(tokens.shape[1])
        return self.forward(tokens)


SUPPORTED = {
    "relaxkd-tiny (CLIP)": lambda: _random_model(TINY_MODEL),
    "relaxkd-tiny (CustomTextCLIP)": lambda: _random_model(TINY_MODEL, force_custom_text=True),
    "ViT-B-32 (CLIP)": lambda: _random_model("ViT-B-32"),
    "ViT-B-32 (CustomTextCLIP)": lambda: _random_model("ViT-B-32", force_custom_text=True),
}


@pytest.fixture(scope="module", params=[
    "relaxkd-tiny (CLIP)",
    "relaxkd-tiny (CustomTextCLIP)",
    "ViT-B-32 (CLIP)",
    pytest.param("ViT-B-32 (CustomTextCLIP)", marks=pytest.mark.slow),
])
def supported(request) -> tuple[ClipEncoder, torch.Tensor]:
    """An encoder of each supported tower, with ``encode_text``'s embeddings of PROMPTS (computed
    once: at 77 tokens they are the slow part)."""
    model = SUPPORTED[request.param]()
    assert type(model).__name__ == request.param.split("(")[1].rstrip(")")
    encoder = _encoder(model, request.param.split(" ")[0])
    with torch.inference_mode():
        raw = encoder.model.encode_text(encoder.tokenizer(PROMPTS)).float()
    return encoder, raw


def test_shortened_texts_equal_encode_text(supported, monkeypatch):
    encoder, raw = supported
    assert encoder.text_forward.full_length_reason is None
    lengths = encoder.text_forward.lengths(encoder.tokenizer(PROMPTS))
    context = encoder.context_length
    assert len(set(lengths.tolist())) >= 12 and int(lengths.min()) <= 3 and int(lengths.max()) == context
    spy = _LengthSpy(encoder.text_forward)
    monkeypatch.setattr(encoder, "text_forward", spy)
    got = encoder.encode_texts(PROMPTS, batch_size=8)
    assert (got - F.normalize(raw, dim=-1)).abs().max() <= 1e-5
    # batches really ran shorter than the context, the truncated prompts at the full context
    assert min(spy.seen) < context // 2 and max(spy.seen) == context
    assert sorted(spy.seen) == spy.seen, "batches of one window go from short to long"


def test_shortened_word_embeddings_equal_encode_text(supported):
    encoder, raw = supported
    got = encoder.embed_words(WORDS, batch_size=5, progress=False)
    for row, word in zip(got, WORDS):
        # Algorithm 1: the raw template features averaged, then normalised
        templates_raw = raw[[PROMPTS.index(t.format(word)) for t in TEMPLATES]]
        assert (row - F.normalize(templates_raw.mean(0), dim=0)).abs().max() <= 1e-5, word


def test_texts_keep_their_order_across_windows():
    encoder = _encoder(_random_model(TINY_MODEL), TINY_MODEL)
    texts = [f"{'big ' * (i % 9)}thing number {i}" for i in range(300)]  # lengths interleaved
    got = encoder.encode_texts(texts, batch_size=4)  # 64 texts per window: several windows
    assert (got - _reference(encoder, texts)).abs().max() <= 1e-5


@pytest.mark.parametrize("text_cfg, reason", [
    ({"no_causal_mask": True}, "no causal mask"),
    ({"pool_type": "last"}, "pools the 'last' token"),
])
def test_fallback_where_the_shortcut_is_not_exact(text_cfg, reason, capsys):
    encoder = _encoder(_random_model(TINY_MODEL, text_cfg=_tiny_text_cfg(**text_cfg)), TINY_MODEL)
    said = capsys.readouterr().err.strip().splitlines()
    assert reason in encoder.text_forward.full_length_reason
    assert len(said) == 1 and "texts encoded at the full 16 tokens" in said[0] and reason in said[0]
    assert "differs from encode_text" in said[0]
    tokens = encoder.tokenizer(PROMPTS)
    assert torch.equal(encoder.text_forward.lengths(tokens), torch.full((len(PROMPTS),), 16))
    assert torch.equal(encoder.encode_texts(PROMPTS), _reference(encoder, PROMPTS))


def test_unproven_shortcut_used_when_probes_match(capsys):
    # pooling the first token under a causal mask reads nothing after it: exact, though not end-of-text
    encoder = _encoder(_random_model(TINY_MODEL, text_cfg=_tiny_text_cfg(pool_type="first")), TINY_MODEL)
    assert encoder.text_forward.full_length_reason is None and capsys.readouterr().err == ""
    assert (encoder.encode_texts(PROMPTS) - _reference(encoder, PROMPTS)).abs().max() <= 1e-5


class _MeanPooledTower(torch.nn.Module):
    """A text tower that is not open_clip's TextTransformer: mean over every position, padding too."""

    def __init__(self, text: torch.nn.Module):
        super().__init__()
        self.text = text
        self.projection = torch.nn.Linear(text.width, 64)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.text.token_embedding(tokens) + self.text.positional_embedding[: tokens.shape[1]]
        return self.projection(x.mean(dim=1))


def test_fallback_for_another_text_tower(capsys):
    model = _random_model(TINY_MODEL, force_custom_text=True)
    model.text = _MeanPooledTower(model.text)
    encoder = _encoder(model, TINY_MODEL)
    reason = encoder.text_forward.full_length_reason
    assert "_MeanPooledTower, not open_clip's TextTransformer" in reason and "differs" in reason
    assert capsys.readouterr().err.count("\n") == 1


def test_probe_check_catches_a_tower_that_reads_the_padding(capsys):
    """The end-of-text argument holds for open_clip's code; a hook that lets the sequence length leak
    into the result breaks it, and the check at load sees that."""
    model = _random_model(TINY_MODEL)
    model.ln_final.register_forward_hook(lambda module, args, out: out + out.mean(dim=1, keepdim=True))
    encoder = _encoder(model, TINY_MODEL)
    assert "differs from encode_text" in encoder.text_forward.full_length_reason
    assert "full 16 tokens" in capsys.readouterr().err


def test_noun_table_says_first_how_long_it_takes_here(monkeypatch, capsys):
    from relaxkd.clip import encoder as encoder_module

    encoder = _encoder(_random_model(TINY_MODEL), TINY_MODEL)
    words = [f"{'big ' * (i % 5)}thing {i}" for i in range(40)]
    encoder.embed_words(words, progress=True)  # 280 prompts: below the threshold, no estimate
    assert "about" not in capsys.readouterr().err
    monkeypatch.setattr(encoder_module, "_ESTIMATE_ABOVE", 100)
    encoder.embed_words(words, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("[relaxkd] CLIP word embeddings: 40 words x 7 templates = 280 prompts with "
                               "random-weight CLIP relaxkd-tiny on cpu: about ")
    assert float(lines[0].split("(")[1].split(" prompts/s")[0].replace(",", "")) > 0
    assert lines[-1].startswith("[relaxkd] CLIP word embeddings: 40 words in ")  # then the table itself
