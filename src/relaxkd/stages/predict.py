"""An export folder as ``relaxkd predict`` reads it: its files and manifest, the student, image files.

Start-up is most of a prediction's time (issue 28), so this module imports only the standard
library, PIL and numpy at its top: ``--model`` and the image paths are checked before torch is
imported, the TorchScript file runs on torch alone, and images are prepared by
:mod:`relaxkd.images` (not torchvision). Only an export without a TorchScript file rebuilds the
network from student.safetensors (:func:`load_student`, which loads ``relaxkd.models``).
"""
from __future__ import annotations

import contextlib
import json
import stat
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from relaxkd.errors import UserError
from relaxkd.images import IMAGENET_STATS, WIDE_MODES, normalized_pixels, resize_center_crop, to_rgb

INFO, WEIGHTS, TORCHSCRIPT, ONNX = "student.json", "student.safetensors", "student.torchscript.pt", "student.onnx"
#: what `relaxkd export` wrote, with each file's SHA-256: predict reads nothing else
EXPORT_MANIFEST = "manifest.json"
#: the files `relaxkd export` writes; ``--model`` may name any of them instead of their folder
EXPORT_FILES = (TORCHSCRIPT, ONNX, INFO, WEIGHTS, EXPORT_MANIFEST)
#: the largest input side a student is exported for (ImageNet models use 224)
MAX_IMAGE_SIZE = 4096


def export_folder(model: Path) -> Path:
    """The export folder ``--model`` names: the folder itself, or a file `relaxkd export` wrote in it."""
    if model.is_file():
        if model.name not in EXPORT_FILES:
            raise UserError(f"--model {str(model)!r} is not a file `relaxkd export` writes ({', '.join(EXPORT_FILES[:3])}); "
                            f"give the export folder")
        model = model.parent
    if not (model / INFO).is_file():
        raise UserError(f"{str(model)!r} is not an export directory (no {INFO}); run `relaxkd export` first")
    return model


def verify_export(model_dir: Path, names: tuple[str, ...]) -> dict[str, str]:
    """The export manifest's files (name -> SHA-256), after checking ``names`` against it."""
    from relaxkd.artifacts import MANIFEST_DIGEST, file_sha256, manifest_digest

    advice = "run `relaxkd export` again"
    try:
        manifest = json.loads((model_dir / EXPORT_MANIFEST).read_text())
    except (OSError, ValueError):
        raise UserError(
            f"{model_dir} has no readable {EXPORT_MANIFEST} (not written by this version of `relaxkd export`); {advice}"
        ) from None
    if not isinstance(manifest, dict) or manifest.get(MANIFEST_DIGEST) != manifest_digest(manifest):
        raise UserError(f"{model_dir / EXPORT_MANIFEST} was changed after export; {advice}")
    files = manifest.get("files") or {}
    for name in names:
        if name not in files:
            raise UserError(f"{model_dir / EXPORT_MANIFEST} does not list {name}; {advice}")
        if not (model_dir / name).is_file() or file_sha256(model_dir / name) != files[name]:
            raise UserError(
                f"{model_dir / name} does not match the export's manifest (changed or replaced after export); {advice}"
            )
    return files


def read_info(folder: Path, advice: str) -> dict:
    """student.json, checked: arch, num_classes, one name per class, image_size."""
    info = _read_arch(folder, advice)
    _check_classes(info, folder, advice)
    return info


def _read_arch(folder: Path, advice: str) -> dict:
    """student.json with its arch and num_classes checked (what rebuilding the network needs)."""
    try:
        info = json.loads((folder / INFO).read_text())
        arch, num_classes = info["arch"], int(info["num_classes"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{folder / INFO} is damaged ({type(err).__name__}: {err}); {advice}") from None
    if not isinstance(arch, str) or num_classes < 2:
        raise UserError(f"{folder / INFO} is damaged (arch {arch!r}, num_classes {num_classes}); {advice}")
    return info


def _check_classes(info: dict, folder: Path, advice: str) -> None:
    """student.json's class list and image size."""
    num_classes, classes, size = int(info["num_classes"]), info.get("classes"), info.get("image_size", 224)
    problem = ""
    if not isinstance(classes, list) or len(classes) != num_classes or not all(isinstance(c, str) for c in classes):
        got = len(classes) if isinstance(classes, list) else type(classes).__name__
        problem = f"classes must list {num_classes} class names, found {got}"
    elif isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_IMAGE_SIZE:
        problem = f"image_size must be a whole number of pixels from 1 to {MAX_IMAGE_SIZE}, found {size!r}"
    if problem:
        raise UserError(f"{folder / INFO} is damaged ({problem}); {advice}")


def load_student(folder: Path, advice: str):
    """The student network in ``folder`` rebuilt from student.json + student.safetensors, and its
    info; damaged or mismatched files are a UserError."""
    from relaxkd.checkpoints import differences, read_checkpoint
    from relaxkd.models import build_backbone

    info = _read_arch(folder, advice)
    arch, num_classes = info["arch"], int(info["num_classes"])
    weights = folder / WEIGHTS
    state = read_checkpoint(weights, f"student weights {weights}", advice)
    model = build_backbone(arch, num_classes, "none")
    detail = differences(state, model.state_dict(), weights.name, f"the {arch} with {num_classes} classes of {INFO}")
    if detail:
        raise UserError(f"{folder} holds student files that do not fit together ({detail}); {advice}")
    _check_classes(info, folder, advice)
    model.load_state_dict(state)
    return model.eval(), info


def load_exported(model_dir: Path):
    """The exported student (the TorchScript file when the export has one) and its info."""
    advice = "run `relaxkd export` again"
    listed = verify_export(model_dir, (INFO, WEIGHTS))
    if TORCHSCRIPT not in listed:  # an ONNX export: the same weights, rebuilt from student.safetensors
        return load_student(model_dir, advice)
    verify_export(model_dir, (TORCHSCRIPT,))
    info = read_info(model_dir, advice)
    import torch  # noqa: PLC0415 - after the path checks: a wrong path is answered before torch's import

    try:
        with quiet_torchscript():
            model = torch.jit.load(str(model_dir / TORCHSCRIPT), map_location="cpu")
    except RuntimeError as err:
        raise UserError(f"{model_dir / TORCHSCRIPT} is not a TorchScript model ({str(err).splitlines()[0]}); {advice}") from None
    return model.eval(), info


@contextlib.contextmanager
def quiet_torchscript():
    """torch's deprecation notices for the TorchScript and TorchScript-based ONNX paths that export and
    predict choose on purpose say nothing a user can act on: silenced here, where they arise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.(trace|load)\w*`? is deprecated.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"The feature will be removed\. Please remove usage of this function.*",
                                category=DeprecationWarning)
        yield


def check_image_path(path: Path) -> None:
    """A regular file; a FIFO, device or folder is refused before it is opened (a FIFO would block)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"image file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise UserError(f"image file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise UserError(f"image file {str(path)!r} is not a regular file (a folder, FIFO or device); pass image files")


def open_image(path: Path) -> Image.Image:
    """An RGB image from a regular file; an image over PIL's decompression-bomb limit is refused."""
    check_image_path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return to_rgb(img, path) if img.mode in WIDE_MODES else img.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"image file {str(path)!r} is too large to classify (over {Image.MAX_IMAGE_PIXELS:,} pixels); "
                        f"downscale it first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UserError(f"image file {str(path)!r} is not a readable image") from None


def predict_files(model: Path, images: list[Path], top: int = 1) -> list[str]:
    """One line per image: its path and the ``top`` most likely classes with their probabilities.

    The test view of ``build_transform("test", image_size)`` (Resize + CenterCrop, crop ratio 1), with
    the ImageNet statistics the student was trained with."""
    if top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    model_dir = export_folder(model)
    for path in images:
        check_image_path(Path(path))
    net, info = load_exported(model_dir)
    import torch  # noqa: PLC0415 - loaded by load_exported already; imported here for the forward pass

    size, classes = int(info.get("image_size", 224)), info["classes"]
    scale, shift = IMAGENET_STATS.uint8_affine()
    lines = []
    for path in images:
        x = torch.from_numpy(normalized_pixels(resize_center_crop(open_image(Path(path)), size, size), scale, shift))[None]
        with torch.inference_mode():
            logits = net(x)
        if tuple(logits.shape) != (1, len(classes)):
            raise UserError(f"{model_dir} holds a model with outputs {tuple(logits.shape)[1:]} but {len(classes)} classes "
                            f"in {INFO}; run `relaxkd export` again")
        values, indices = logits.softmax(dim=1)[0].topk(min(top, len(classes)))
        ranked = ", ".join(f"{classes[i]} {v:.3f}" for v, i in zip(values.tolist(), indices.tolist()))
        lines.append(f"{path}: {ranked}")
    return lines
