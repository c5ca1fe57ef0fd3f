"""Loading a CLIP model: open_clip names, pretrained tags, checkpoint files, the tiny test model.

Every problem with the model name or the weights is a :class:`UserError` naming ``clip.model`` or
``clip.weights`` and what would work instead.
"""
from __future__ import annotations

import contextlib
import difflib
import logging
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch

from relaxkd.checkpoints import differences, read_checkpoint, tensors_of
from relaxkd.clip.encoder import ClipEncoder, check_device, check_precision
from relaxkd.errors import UserError

TINY_MODEL = "relaxkd-tiny"
TINY_CONFIG = Path(__file__).with_name("model_configs") / f"{TINY_MODEL}.json"
_SCHEMAS = ("hf-hub:", "local-dir:")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")
_WELL_KNOWN_MODELS = ("ViT-B-32", "ViT-B-32-quickgelu", "ViT-B-16", "ViT-L-14", "RN50")
def register_tiny_model() -> None:
    """Make ``relaxkd-tiny`` (the shipped tiny random-weight CLIP config) known to open_clip."""
    if TINY_MODEL not in open_clip.list_models():
        if not TINY_CONFIG.is_file():  # a packaging bug, not a user error
            raise FileNotFoundError(
                f"{TINY_CONFIG} is missing: the package must ship relaxkd/clip/model_configs/*.json"
            )
        open_clip.add_model_config(TINY_CONFIG)


def load_clip(
    model: str,
    weights: str = "none",
    device: str | torch.device = "cpu",
    precision: str = "auto",
    seed: int = 0,
) -> ClipEncoder:
    """Build an open_clip model with its tokenizer and test-time transform.

    ``model``: an open_clip model name (``open_clip.list_models()``), ``relaxkd-tiny``, or a
    ``local-dir:/path`` / ``hf-hub:org/repo`` name (these carry their own weights).
    ``weights``: an open_clip pretrained tag (e.g. ``openai``), a checkpoint file path, or
    ``none`` for random initialisation seeded by ``seed``.
    ``precision``: ``auto`` (bf16/fp16 autocast on CUDA, fp32 on CPU), ``fp32``, ``bf16``, ``fp16``.
    Bad input raises :class:`UserError`.
    """
    register_tiny_model()
    model = str(model).strip()
    weights = "none" if weights is None else str(weights).strip()
    precision = check_precision(precision)
    device = check_device(device)
    source = _weights_source(model, weights)
    with _held_loading_logs():
        try:
            # Seeded random init without disturbing the caller's global RNG state; open_clip builds
            # the model on the CPU before moving it, so only the CPU generator matters.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                clip_model, _, preprocess = open_clip.create_model_and_transforms(
                    model,
                    pretrained=source.pretrained,
                    device=device,
                    precision="fp32",  # fp32 master weights; half precision comes from autocast
                    force_quick_gelu=source.force_quick_gelu,
                )
            tokenizer = open_clip.get_tokenizer(model)
        except UserError:
            raise
        except Exception as err:
            user_error = _loading_error(err, model, source.weights, source.kind)
            if user_error is None:
                raise
            raise user_error from err
    return ClipEncoder(clip_model, tokenizer, preprocess, model_name=model, weights=source.weights,
                       is_random=source.is_random, precision=precision)


@dataclass(frozen=True)
class _WeightsSource:
    weights: str
    #: what open_clip loads: a pretrained tag, a file path, or None (random or schema-named weights)
    pretrained: str | None
    #: none | file | tag | schema: selects the error message on failure
    kind: str
    is_random: bool
    force_quick_gelu: bool = False


def _weights_source(model: str, weights: str) -> _WeightsSource:
    """Where ``model``'s weights come from; a bad model, tag or file is a UserError."""
    schema = next((s for s in _SCHEMAS if model.startswith(s)), None)
    is_random = weights.lower() in ("none", "")
    if schema is not None:
        if not is_random:
            raise UserError(
                f"CLIP model {model!r} brings its own weights, so clip.weights must be none "
                f"(got {weights!r}); or use a plain open_clip model name with clip.weights=/path"
            )
        no_checkpoint = schema == "local-dir:" and not _local_dir_has_checkpoint(model[len(schema):])
        return _WeightsSource(weights, None, "schema", no_checkpoint)
    _check_model_name(model)
    if is_random:
        return _WeightsSource("none", None, "none", True)
    if _looks_like_path(weights):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(
                f"CLIP weights file {weights!r} does not exist (clip.weights); give an existing "
                f"checkpoint file, an open_clip pretrained tag such as openai, or none"
            )
        # OpenAI's TorchScript checkpoints were trained with QuickGELU.
        return _WeightsSource(weights, str(path), "file", False, _is_torchscript_archive(path))
    tag_cfg = open_clip.get_pretrained_cfg(model, weights)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise UserError(
            f"unknown pretrained weights {weights!r} for CLIP model {model!r} "
            f"(clip.weights); valid tags: {', '.join(tags) if tags else 'none for this model'}; "
            f"or give a checkpoint file path, or none for random weights"
        )
    # e.g. ViT-B-32 + openai: the weights need QuickGELU, the plain config lacks it.
    return _WeightsSource(weights, weights, "tag", False, bool(tag_cfg.get("quick_gelu", False)))


def _check_model_name(model: str) -> None:
    known = open_clip.list_models()
    if model.replace("/", "-") in known:  # open_clip accepts ViT-B/32 for ViT-B-32
        return
    close = difflib.get_close_matches(model, known, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    examples = ", ".join((*_WELL_KNOWN_MODELS, TINY_MODEL))
    raise UserError(
        f"unknown CLIP model {model!r} (clip.model); {hint}valid names include {examples}, "
        f"local-dir:/path and hf-hub:org/repo; all names: python -c "
        f"\"import open_clip; print(open_clip.list_models())\""
    )


def _looks_like_path(weights: str) -> bool:
    # Pretrained tags are plain identifiers (openai, laion2b_s34b_b79k): anything with a path
    # separator, a checkpoint suffix, or naming an existing file is a path.
    return (
        "/" in weights
        or "\\" in weights
        or weights.startswith("~")
        or weights.lower().endswith(_CHECKPOINT_SUFFIXES)
        or Path(weights).exists()
    )


def _is_torchscript_archive(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _local_dir_has_checkpoint(directory: str) -> bool:
    folder = Path(directory).expanduser()
    return any(any(folder.glob(f"*{suffix}")) for suffix in (".safetensors", ".bin", ".pth"))


def _brief(err: BaseException, limit: int = 240) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _loading_error(err: Exception, model: str, weights: str, weights_kind: str) -> UserError | None:
    """Turn open_clip's failure into a one-line UserError, or None when it looks like a bug."""
    message = str(err)
    if weights_kind == "file":
        return _weights_file_error(err, model, weights)
    if weights_kind == "tag" and "download" in message.lower():
        return UserError(
            f"could not download pretrained weights {weights!r} for CLIP model {model!r} "
            f"(offline? {_brief(err)}); pass a local file path with clip.weights=/path"
        )
    if weights_kind == "schema":
        if model.startswith("hf-hub:"):
            return UserError(
                f"could not fetch CLIP model {model!r} from the Hugging Face Hub (offline? "
                f"{_brief(err)}); download it elsewhere and use clip.model=local-dir:/path"
            )
        return UserError(
            f"could not load CLIP model {model!r} ({_brief(err)}); a local-dir: folder holds "
            f"open_clip_config.json and a weights file"
        )
    return None


def _weights_file_error(err: Exception, model: str, weights: str) -> UserError:
    """Why a checkpoint file failed: no checkpoint at all, or one of another model (both sides named)."""
    path = Path(weights).expanduser()
    advice = f"clip.weights must be an open_clip/OpenAI checkpoint of {model}"
    if _is_torchscript_archive(path):  # OpenAI's TorchScript files are no plain state dicts
        return UserError(f"could not load CLIP weights file {weights!r} into model {model!r} ({_brief(err)}); {advice}")
    found = tensors_of(read_checkpoint(path, f"CLIP weights file {weights!r}", advice))  # raises for a non-checkpoint
    if found is None:
        return UserError(f"CLIP weights file {weights!r} holds no state dict of tensors; {advice}")
    try:
        with torch.random.fork_rng(devices=[]), _held_loading_logs():
            expected = open_clip.create_model(model, device="cpu").state_dict()
        detail = differences(found, expected, "the file", model)
    except Exception:  # noqa: BLE001 - the description is a courtesy; open_clip's reason will do
        detail = ""
    return UserError(
        f"CLIP weights file {weights!r} does not fit CLIP model {model!r}: {detail or _brief(err)}; "
        f"set clip.model to the model the file was saved from, or clip.weights to a checkpoint of {model}"
    )


class _HeldLogs(logging.Handler):
    """Holds the log records of open_clip and huggingface_hub while a model loads."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _held_loading_logs() -> Iterator[None]:
    """open_clip logs on the root logger (and its module-level ``logging.error`` would install a
    stderr handler for the rest of the process); huggingface_hub logs every retry. A failure that
    :func:`_loading_error` reports says it in one line, so what they logged is dropped; after a
    load that worked (or a failure relaxkd does not explain) it is passed on, except open_clip's
    random-init warning (callers know: ``ClipEncoder.is_random``)."""
    root = logging.getLogger()
    held = _HeldLogs()
    root.addHandler(held)  # a root handler also keeps logging.error from calling basicConfig
    reported = False
    try:
        yield
    except UserError:
        reported = True
        raise
    finally:
        root.removeHandler(held)
        if not reported:
            for record in held.records:
                if "initialized randomly" not in record.getMessage():
                    logging.getLogger(record.name).handle(record)


# ---------------------------------------------------------------------------------------------
# Encoder
