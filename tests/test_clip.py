"""CLIP encoder layer on the tiny random-weight model: offline, deterministic, exact."""
from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from relaxkd.clip import TEMPLATES, TINY_MODEL, ClipEncoder, PromptTokenizer, load_clip
from relaxkd.errors import UserError

WORDNET_DATA_NOUN = Path("/usr/share/wordnet/data.noun")


@pytest.fixture(scope="module")
def tiny() -> ClipEncoder:
    return load_clip(TINY_MODEL, weights="none", seed=0)


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=generator)


def _user_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


# -- templates and attributes ------------------------------------------------------------------


def test_templates_are_the_seven_of_the_design():
    assert TEMPLATES == (
        "itap of a {}.",
        "a bad photo of the {}.",
        "a origami {}.",
        "a photo of the large {}.",
        "a {} in a video game.",
        "art of the {}.",
        "a photo of the small {}.",
    )


def test_tiny_model_attributes(tiny):
    assert tiny.embed_dim == 64
    assert tiny.image_size == 32
    assert tiny.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert tiny.std == pytest.approx(open_clip.OPENAI_DATASET_STD)
    assert tiny.model_name == TINY_MODEL and tiny.weights == "none"
    assert tiny.is_random and "random-weight CLIP" in tiny.describe()
    assert tiny.device == torch.device("cpu")
    assert not any(p.requires_grad for p in tiny.model.parameters())
    assert TINY_MODEL in open_clip.list_models()


def test_preprocess_transform_gives_normalised_model_sized_tensor(tiny):
    image = Image.new("L", (50, 40), color=128)  # grayscale, non-square
    tensor = tiny.preprocess_transform()(image)
    assert tensor.shape == (3, 32, 32)
    expected = (128 / 255 - torch.tensor(tiny.mean)) / torch.tensor(tiny.std)
    assert torch.allclose(tensor[:, 16, 16], expected, atol=1e-2)


# -- determinism and round trips ---------------------------------------------------------------


def test_same_seed_same_embeddings_other_seed_differs(tiny):
    again = load_clip(TINY_MODEL, weights="none", seed=0)
    other = load_clip(TINY_MODEL, weights="none", seed=1)
    images, texts = _images(3), ["a dog", "a cat"]
    assert torch.equal(tiny.encode_images(images), again.encode_images(images))
    assert torch.equal(tiny.encode_texts(texts), again.encode_texts(texts))
    assert not torch.allclose(tiny.encode_texts(texts), other.encode_texts(texts))


def test_loading_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_clip(TINY_MODEL, seed=7)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weights_file_round_trip(tiny, tmp_path, suffix):
    source = load_clip(TINY_MODEL, seed=3)
    path = tmp_path / f"tiny{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(path))
    else:
        torch.save(source.model.state_dict(), path)
    loaded = load_clip(TINY_MODEL, weights=str(path), seed=0)  # seed must not matter
    assert not loaded.is_random and str(path) in loaded.describe()
    for key, value in source.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    images, texts = _images(2), ["itap of a dog."]
    assert torch.equal(loaded.encode_images(images), source.encode_images(images))
    assert torch.equal(loaded.encode_texts(texts), source.encode_texts(texts))


def test_local_dir_model(tmp_path):
    source = load_clip(TINY_MODEL, seed=5)
    model_cfg = open_clip.get_model_config(TINY_MODEL)
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    torch.save(source.model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    loaded = load_clip(f"local-dir:{tmp_path}")
    assert not loaded.is_random
    texts = ["a photo of the small cat."]
    assert torch.equal(loaded.encode_texts(texts), source.encode_texts(texts))


# -- embeddings --------------------------------------------------------------------------------


def test_outputs_are_unit_norm_float32(tiny):
    images = tiny.encode_images(_images(5))
    texts = tiny.encode_texts(["a", "b c", "itap of a dog."])
    words = tiny.embed_words(["dog", "cat"], progress=False)
    for output, n in ((images, 5), (texts, 3), (words, 2)):
        assert output.shape == (n, 64) and output.dtype == torch.float32
        assert torch.allclose(output.norm(dim=-1), torch.ones(n), atol=1e-5)


@pytest.mark.parametrize("batch_size", [3, 7, 2048])
def test_embed_words_averages_templates_exactly(tiny, batch_size):
    words = ["dog", "ice_cream", "Mr.", "C++", "St._John's_wort", "café"]
    got = tiny.embed_words(words, batch_size=batch_size, progress=False)
    for row, word in zip(got, words):
        prompts = [template.format(word.replace("_", " ")) for template in TEMPLATES]
        raw = _raw_text_features(tiny, prompts)
        # Algorithm 1 line 10: mean of the 7 template embeddings, THEN normalise
        expected = F.normalize(raw.mean(dim=0), dim=0)
        assert torch.allclose(row, expected, atol=1e-6), word


def _raw_text_features(encoder, texts):
    with torch.no_grad():
        return encoder.model.encode_text(encoder.tokenizer(texts)).float()


def test_embed_words_normalises_after_averaging_not_before(tiny):
    """Issue 13, item 9: the paper's order differs from normalise-each-then-average whenever the
    template features differ in norm; the result must match the paper's order only."""
    words = ["dog", "great_white_shark", "x"]
    got = tiny.embed_words(words, progress=False)
    differs = False
    for row, word in zip(got, words):
        raw = _raw_text_features(tiny, [t.format(word.replace("_", " ")) for t in TEMPLATES])
        paper = F.normalize(raw.mean(0), dim=0)
        each_first = F.normalize(F.normalize(raw, dim=1).mean(0), dim=0)
        assert torch.allclose(row, paper, atol=1e-6)
        differs |= not torch.allclose(paper, each_first, atol=1e-6)
    assert differs, "the test words do not tell the two orders apart"


def test_embed_words_custom_templates(tiny):
    templates = ("a photo of a {}.", "{}")
    got = tiny.embed_words(["red_fox"], templates=templates, progress=False)
    expected = F.normalize(_raw_text_features(tiny, ["a photo of a red fox.", "red fox"]).mean(0), dim=0)
    assert torch.allclose(got[0], expected, atol=1e-6)
    with pytest.raises(UserError) as excinfo:
        tiny.embed_words(["fox"], templates=("no slot here",), progress=False)
    assert "{}" in _user_error(excinfo)


def test_underscores_become_spaces(tiny):
    underscored = tiny.embed_words(["ice_cream", "great_white_shark"], progress=False)
    spaced = tiny.embed_words(["ice cream", "great white shark"], progress=False)
    assert torch.equal(underscored, spaced)


def test_embed_words_empty_list(tiny):
    assert tiny.embed_words([], progress=False).shape == (0, 64)


TRICKY_WORDS = [
    "dog", "Ice cream", "St. John's wort", "x-ray", "3-D", "a.k.a", "U.S.", "Mr.", ".22",
    "C++", "rock 'n' roll", "café", "naïve", "AT&T", "&amp;", "<end_of_text>", "",
    "  padded  ", "double  space", "a " * 20 + "very long name that is truncated",
]


@pytest.mark.parametrize(
    "templates", [TEMPLATES, ("{}", "{}s", "x{}y", "({})", "'{}'", "it's a {}'s")]
)
def test_prompt_tokenizer_matches_open_clip_tokenizer(tiny, templates):
    tokenize = PromptTokenizer(tiny.tokenizer, templates)
    prompts = [t.replace("{}", w, 1) for w in TRICKY_WORDS for t in templates]
    assert torch.equal(tokenize(TRICKY_WORDS), tiny.tokenizer(prompts))


def test_prompt_tokenizer_splices_for_the_default_templates(tiny):
    # The fast path must be active for the real templates, or WordNet embedding gets 7x slower.
    assert PromptTokenizer(tiny.tokenizer, TEMPLATES)._affixes is not None


def test_background_tokenisation_gives_the_same_batches(tiny):
    from relaxkd.clip.encoder import _tokenized_batches

    tokenize = PromptTokenizer(tiny.tokenizer, TEMPLATES)
    words = [f"word {i}" for i in range(23)]
    sequential = list(_tokenized_batches(tokenize, words, 5, background=False))
    threaded = list(_tokenized_batches(tokenize, words, 5, background=True))
    assert len(sequential) == len(threaded) == 5
    assert all(torch.equal(a, b) for a, b in zip(sequential, threaded))


@pytest.mark.slow
@pytest.mark.skipif(not WORDNET_DATA_NOUN.is_file(), reason="Debian wordnet-base not installed")
def test_prompt_tokenizer_matches_on_all_wordnet_nouns(tiny):
    lemmas: dict[str, None] = {}
    for line in WORDNET_DATA_NOUN.open(encoding="utf-8"):
        if line.startswith("  "):  # licence header
            continue
        fields = line.split()
        for i in range(int(fields[3], 16)):
            lemmas.setdefault(fields[4 + 2 * i].replace("_", " "), None)
    words = list(lemmas)
    assert len(words) == 119_034
    tokenize = PromptTokenizer(tiny.tokenizer, TEMPLATES)
    for start in range(0, len(words), 10_000):
        chunk = words[start : start + 10_000]
        assert torch.equal(tokenize(chunk), tokenize._tokenize_prompts(chunk))


# -- images ------------------------------------------------------------------------------------


def test_encode_images_usable_in_a_training_loop(tiny):
    head = torch.nn.Linear(tiny.embed_dim, 3)
    features = tiny.encode_images(_images(4))
    loss = F.cross_entropy(head(features), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert head.weight.grad is not None
    assert all(p.grad is None for p in tiny.model.parameters())
    # Text embeddings can seed a learnable bank.
    torch.nn.Parameter(tiny.embed_words(["dog"], progress=False))


def test_encode_images_resizes_other_sizes(tiny):
    features = tiny.encode_images(_images(2, size=48))
    assert features.shape == (2, 64)


class _PermutedImages(Dataset):
    """Items come out of position order: item i is image ``order[i]``."""

    def __init__(self, images: torch.Tensor, order: list[int]):
        self.images, self.order = images, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, position: int):
        index = self.order[position]
        return self.images[index], index % 3, index


def test_encode_dataset_orders_by_index(tiny):
    images = _images(10, seed=1)
    dataset = _PermutedImages(images, order=[7, 2, 9, 0, 4, 1, 8, 3, 6, 5])
    embeddings, labels, indices = tiny.encode_dataset(dataset, batch_size=4, progress=False)
    assert embeddings.dtype == torch.float16 and embeddings.shape == (10, 64)
    assert torch.equal(indices, torch.arange(10))
    assert torch.equal(labels, torch.arange(10) % 3)
    expected = tiny.encode_images(images).half()
    assert torch.allclose(embeddings.float(), expected.float(), atol=1e-3)


# -- errors ------------------------------------------------------------------------------------


def test_unknown_model_name():
    with pytest.raises(UserError) as excinfo:
        load_clip("ViT-B-33")
    message = _user_error(excinfo)
    assert "ViT-B-33" in message and TINY_MODEL in message and "list_models()" in message


def test_missing_weights_file(tmp_path):
    with pytest.raises(UserError) as excinfo:
        load_clip(TINY_MODEL, weights=str(tmp_path / "missing.pt"))
    assert "does not exist" in _user_error(excinfo)


def test_weights_of_another_model(tmp_path):
    other = open_clip.create_model(TINY_MODEL, embed_dim=32)  # same family, other shapes
    path = tmp_path / "other.pt"
    torch.save(other.state_dict(), path)
    with pytest.raises(UserError) as excinfo:
        load_clip(TINY_MODEL, weights=str(path))
    message = _user_error(excinfo)
    assert "does not fit" in message and str(path) in message and TINY_MODEL in message


def test_weights_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(UserError) as excinfo:
        load_clip(TINY_MODEL, weights=str(path))
    assert str(path) in _user_error(excinfo)


def test_unknown_pretrained_tag():
    with pytest.raises(UserError) as excinfo:
        load_clip(TINY_MODEL, weights="openai")
    assert "openai" in _user_error(excinfo)
    with pytest.raises(UserError) as excinfo:
        load_clip("ViT-B-32", weights="no_such_tag")
    assert "laion2b" in _user_error(excinfo)  # lists the valid tags


def test_pretrained_tag_offline(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    # Simulate a machine with no network: open_clip's download goes nowhere.
    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(UserError) as excinfo:
        load_clip("ViT-B-32", weights="openai")
    assert "clip.weights=/path" in _user_error(excinfo)


def test_bad_precision_device_and_schema_weights(tmp_path):
    with pytest.raises(UserError):
        load_clip(TINY_MODEL, precision="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(UserError) as excinfo:
            load_clip(TINY_MODEL, device="cuda")
        assert "CUDA" in _user_error(excinfo)
    with pytest.raises(UserError):
        load_clip(f"local-dir:{tmp_path}", weights="openai")
    with pytest.raises(UserError) as excinfo:
        load_clip(f"local-dir:{tmp_path / 'nowhere'}")
    assert "local-dir" in _user_error(excinfo)


def test_online_clip_resizes_as_the_encoder_does(tiny):
    """One resize path to CLIP's input size: OnlineClip leaves it to encode_images (bicubic, antialiased)."""
    from relaxkd.clip.online import OnlineClip
    from relaxkd.data.transforms import CLIP_STATS, IMAGENET_STATS, renormalize

    images = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    size = (tiny.image_size, tiny.image_size)
    clip_input = F.interpolate(renormalize(images, IMAGENET_STATS, CLIP_STATS), size=size, mode="bicubic", antialias=True)
    expected = tiny.encode_images(clip_input)
    torch.testing.assert_close(OnlineClip(tiny, IMAGENET_STATS)(images), expected)
    torch.testing.assert_close(tiny.encode_images(renormalize(images, IMAGENET_STATS, CLIP_STATS)), expected)
