"""Export a trained student (safetensors + TorchScript or ONNX) and classify image files with it."""
from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from pathlib import Path

import torch
from relaxkd.errors import UserError

FORMATS = ("torchscript", "onnx")


def _find_student(ctx, artifact: Path | None = None):
    """The student artifact to export: the one given, else the newest in the run directory."""
    from relaxkd.artifacts import ArtifactStore

    if artifact is not None:
        found = [a for a in ArtifactStore(artifact.parent).artifacts("distill") if a.path == artifact]
        if not found:
            raise UserError(f"{str(artifact)!r} is not a complete distill artifact; pass a distill-* directory of a run")
        return found[0]
    artifacts = ctx.store.artifacts("distill")
    if not artifacts:
        raise UserError(f"no trained student in {str(ctx.cfg.run_dir)!r}; run `relaxkd distill` first")
    return max(artifacts, key=lambda a: a.manifest.get("created", ""))


def export_student(ctx, out: Path, fmt: str = "torchscript", artifact: Path | None = None) -> list[Path]:
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    art = _find_student(ctx, artifact)
    model, info = _load_student(art.path, f"delete {art.path} and rerun `relaxkd distill`")
    from relaxkd.artifacts import atomic_output

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "student.safetensors", out / "student.json"]
    for path in written:  # each file appears whole or not at all (a full disk leaves the old one)
        with atomic_output(path) as tmp:
            shutil.copyfile(art.path / path.name, tmp)
    size = int(info.get("image_size", 224))
    example = torch.zeros(1, 3, size, size)
    path = out / ("student.torchscript.pt" if fmt == "torchscript" else "student.onnx")
    with atomic_output(path) as tmp, quiet_export():
        if fmt == "torchscript":
            torch.jit.trace(model, example).save(str(tmp))
        else:
            torch.onnx.export(model, (example,), str(tmp), input_names=["images"], output_names=["logits"],
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    written.append(path)
    return written


@contextlib.contextmanager
def quiet_export():
    """torch's deprecation notices for the two export paths we choose on purpose (TorchScript tracing,
    the TorchScript-based ONNX exporter) say nothing a user can act on: silenced here, where they arise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace\w*`? is deprecated.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"The feature will be removed\. Please remove usage of this function.*",
                                category=DeprecationWarning)
        yield


def load_exported(model_dir: Path) -> tuple[torch.nn.Module, dict]:
    info_path = model_dir / "student.json"
    if not info_path.is_file():
        raise UserError(f"{str(model_dir)!r} is not an export directory (no student.json); run `relaxkd export` first")
    return _load_student(model_dir, "run `relaxkd export` again")


def _load_student(folder: Path, advice: str) -> tuple[torch.nn.Module, dict]:
    """The student in ``folder`` (student.json + student.safetensors); damaged files are a UserError."""
    from relaxkd.checkpoints import differences, read_checkpoint
    from relaxkd.models import build_backbone

    try:
        info = json.loads((folder / "student.json").read_text())
        arch, num_classes = info["arch"], int(info["num_classes"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{folder / 'student.json'} is damaged ({type(err).__name__}: {err}); {advice}") from None
    weights = folder / "student.safetensors"
    state = read_checkpoint(weights, f"student weights {weights}", advice)
    model = build_backbone(arch, num_classes, "none")
    detail = differences(state, model.state_dict(), weights.name, f"the {arch} with {num_classes} classes of student.json")
    if detail:
        raise UserError(f"{folder} holds student files that do not fit together ({detail}); {advice}")
    model.load_state_dict(state)
    return model.eval(), info


def predict_files(model_dir: Path, images: list[Path], top: int = 1) -> list[str]:
    from PIL import Image, UnidentifiedImageError

    from relaxkd.data.transforms import IMAGENET_STATS, build_transform

    model, info = load_exported(model_dir)
    transform = build_transform("test", int(info.get("image_size", 224)), IMAGENET_STATS)
    lines = []
    for path in images:
        try:
            with Image.open(path) as img:
                x = transform(img.convert("RGB"))[None]
        except FileNotFoundError:
            raise UserError(f"image file {str(path)!r} does not exist") from None
        except (UnidentifiedImageError, OSError):
            raise UserError(f"image file {str(path)!r} is not a readable image") from None
        with torch.inference_mode():
            probs = model(x).softmax(dim=1)[0]
        values, indices = probs.topk(min(top, len(probs)))
        ranked = ", ".join(f"{info['classes'][i]} {v:.3f}" for v, i in zip(values.tolist(), indices.tolist()))
        lines.append(f"{path}: {ranked}")
    return lines
