"""Export a trained student (safetensors + TorchScript or ONNX) and classify image files with it."""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import sys
import warnings
from pathlib import Path

import torch
from relaxkd.errors import UserError

FORMATS = ("torchscript", "onnx")


def _find_student(ctx, artifact: Path | None = None):
    """The student artifact to export: the one given, else the newest in the run directory."""
    from relaxkd.artifacts import ArtifactStore

    damaged: list[tuple[Path, str]] = []
    if artifact is not None:
        found = [a for a in ArtifactStore(artifact.parent).artifacts("distill", verify=True, damaged=damaged)
                 if a.path == artifact]
        for path, reason in damaged:
            if path == artifact:
                raise UserError(f"distill artifact {artifact} is damaged ({reason}); rerun `relaxkd distill` to rebuild it")
        if not found:
            raise UserError(f"{str(artifact)!r} is not a complete distill artifact; pass a distill-* directory of a run")
        return found[0]
    artifacts = ctx.store.artifacts("distill", verify=True, damaged=damaged)  # every byte as the manifest says
    if not artifacts and damaged:
        path, reason = damaged[0]
        raise UserError(f"distill artifact {path} is damaged ({reason}); rerun `relaxkd distill` to rebuild it")
    if not artifacts:
        raise UserError(f"no trained student in {str(ctx.cfg.run_dir)!r}; run `relaxkd distill` first")
    return max(artifacts, key=lambda a: a.manifest.get("created", ""))


def export_student(ctx, out: Path, fmt: str = "torchscript", artifact: Path | None = None) -> list[Path]:
    """Write the student into ``out``, which then holds exactly this export: the files of a previous
    export there (its manifest lists them) are replaced or removed, the user's other files kept."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    if out.exists() and not out.is_dir():
        raise UserError(f"export --out {out} is a file; pass a folder")
    _refuse_artifact_folder(out, (ctx.store.root, ctx.shared.root))
    previous = _previous_export(out)
    art = _find_student(ctx, artifact)
    model, info = _load_student(art.path, f"delete {art.path} and rerun `relaxkd distill`")
    from relaxkd.artifacts import atomic_output, make_dir

    make_dir(out, "--out")
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
    _write_export_manifest(out, written, source=str(art.path))
    _drop_previous(out, previous, written)
    return written


#: artifact directories are named ``<stage>-<16 hex digits>``; stores also hold .work, .tmp-*, .corrupt-*
_ARTIFACT_NAME = re.compile(r"[a-z][a-z0-9-]*-[0-9a-f]{16}")


def _refuse_artifact_folder(out: Path, store_roots: tuple[Path, ...]) -> None:
    """``--out`` may not be an artifact directory or lie inside one (of any run, or the shared cache):
    export's manifest.json would replace the artifact's, and the next run would rebuild it as corrupt."""
    target = out.resolve()
    for folder in (target, *target.parents):
        manifest = _read_manifest(folder)
        if manifest is not None and manifest.get("stage") and manifest.get("key"):  # an artifact's manifest
            raise UserError(f"export --out {out} is inside the artifact {folder}, whose files export would "
                            f"overwrite; pass a folder outside the run's artifacts, e.g. --out export")
    for root in store_roots:
        root = root.resolve()
        if target.is_relative_to(root) and target != root:
            first = target.relative_to(root).parts[0]
            if first.startswith(".") or _ARTIFACT_NAME.fullmatch(first):
                raise UserError(f"export --out {out} is inside {root / first}, which the artifact store owns; "
                                f"pass a folder outside the run's artifacts, e.g. --out export")


def _read_manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / EXPORT_MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _previous_export(out: Path) -> list[str]:
    """The files of the export already in ``out`` (those its manifest lists); a manifest.json there that
    no export wrote is the user's, and export would overwrite it: refused."""
    if not (out / EXPORT_MANIFEST).exists():
        return []
    manifest = _read_manifest(out)
    files = manifest.get("files") if manifest else None
    if manifest is None or manifest.get("kind") != EXPORT_KIND or not isinstance(files, dict):
        raise UserError(f"--out {out} holds a {EXPORT_MANIFEST} that `relaxkd export` did not write; "
                        f"pass another folder, or move that file away")
    return [name for name in files if isinstance(name, str) and Path(name).name == name]


def _drop_previous(out: Path, previous: list[str], written: list[Path]) -> None:
    """Remove the previous export's files this export did not rewrite, and say what was replaced."""
    if not previous:
        return
    new = {p.name for p in written}
    stale = [name for name in previous if name not in new and (out / name).is_file()]
    for name in stale:
        (out / name).unlink()
    removed = f"; removed {', '.join(stale)}, which this export does not have" if stale else ""
    print(f"[relaxkd] export: replaced the previous export in {out} ({', '.join(previous)}){removed}",
          file=sys.stderr, flush=True)


#: what `relaxkd export` wrote, with each file's SHA-256: predict reads nothing else
EXPORT_MANIFEST, EXPORT_KIND = "manifest.json", "relaxkd-export"


def _write_export_manifest(out: Path, files: list[Path], source: str | None = None) -> None:
    from relaxkd.artifacts import MANIFEST_DIGEST, file_sha256, manifest_digest, write_json

    manifest = {"kind": EXPORT_KIND, "files": {p.name: file_sha256(p) for p in files}}
    if source is not None:
        manifest["source"] = source  # the distill artifact exported
    manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
    write_json(out / EXPORT_MANIFEST, manifest)


def _verify_export(model_dir: Path, names: tuple[str, ...]) -> None:
    from relaxkd.artifacts import MANIFEST_DIGEST, file_sha256, manifest_digest

    advice = "run `relaxkd export` again"
    try:
        manifest = json.loads((model_dir / EXPORT_MANIFEST).read_text())
    except (OSError, ValueError):
        raise UserError(f"{model_dir} has no readable {EXPORT_MANIFEST} (not written by this version of `relaxkd export`); {advice}") from None
    if not isinstance(manifest, dict) or manifest.get(MANIFEST_DIGEST) != manifest_digest(manifest):
        raise UserError(f"{model_dir / EXPORT_MANIFEST} was changed after export; {advice}")
    files = manifest.get("files") or {}
    for name in names:
        if name not in files:
            raise UserError(f"{model_dir / EXPORT_MANIFEST} does not list {name}; {advice}")
        if not (model_dir / name).is_file() or file_sha256(model_dir / name) != files[name]:
            raise UserError(f"{model_dir / name} does not match the export's manifest (changed or replaced after export); {advice}")


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
    _verify_export(model_dir, ("student.json", "student.safetensors"))
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
    if not isinstance(arch, str) or num_classes < 2:
        raise UserError(f"{folder / 'student.json'} is damaged (arch {arch!r}, num_classes {num_classes}); {advice}")
    weights = folder / "student.safetensors"
    state = read_checkpoint(weights, f"student weights {weights}", advice)
    model = build_backbone(arch, num_classes, "none")
    detail = differences(state, model.state_dict(), weights.name, f"the {arch} with {num_classes} classes of student.json")
    if detail:
        raise UserError(f"{folder} holds student files that do not fit together ({detail}); {advice}")
    problem = _info_problem(info, num_classes)
    if problem:
        raise UserError(f"{folder / 'student.json'} is damaged ({problem}); {advice}")
    model.load_state_dict(state)
    return model.eval(), info


def _info_problem(info: dict, num_classes: int) -> str:
    """What is wrong with student.json's fields (empty when nothing)."""
    classes = info.get("classes")
    if not isinstance(info.get("arch"), str):
        return "arch is not a name"
    if num_classes < 2:
        return f"num_classes is {num_classes}"
    if not isinstance(classes, list) or len(classes) != num_classes or not all(isinstance(c, str) for c in classes):
        got = len(classes) if isinstance(classes, list) else type(classes).__name__
        return f"classes must list {num_classes} class names, found {got}"
    size = info.get("image_size", 224)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_IMAGE_SIZE:
        return f"image_size must be a whole number of pixels from 1 to {MAX_IMAGE_SIZE}, found {size!r}"
    return ""


#: the largest input side a student is exported for (ImageNet models use 224)
MAX_IMAGE_SIZE = 4096


def _open_image(path: Path):
    """An RGB image from a regular file; a FIFO, device or folder is refused before it is opened (a FIFO
    would block), as is an image over PIL's decompression-bomb limit."""
    import stat
    import warnings

    from PIL import Image, UnidentifiedImageError

    from relaxkd.data.base import WIDE_MODES, to_rgb

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"image file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise UserError(f"image file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise UserError(f"image file {str(path)!r} is not a regular file (a folder, FIFO or device); pass image files")
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


def predict_files(model_dir: Path, images: list[Path], top: int = 1) -> list[str]:
    from relaxkd.data.transforms import IMAGENET_STATS, build_transform

    if top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    model, info = load_exported(model_dir)
    transform = build_transform("test", int(info.get("image_size", 224)), IMAGENET_STATS)
    lines = []
    for path in images:
        x = transform(_open_image(Path(path)))[None]
        with torch.inference_mode():
            probs = model(x).softmax(dim=1)[0]
        values, indices = probs.topk(min(top, len(probs)))
        ranked = ", ".join(f"{info['classes'][i]} {v:.3f}" for v, i in zip(values.tolist(), indices.tolist()))
        lines.append(f"{path}: {ranked}")
    return lines
