"""Export a trained student (safetensors + TorchScript or ONNX); stages/predict.py reads what it writes."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from relaxkd.console import say
from relaxkd.errors import UserError
from relaxkd.records import ModelInfo, read_record
from relaxkd.stages.distill import STAGE
from relaxkd.stages.predict import EXPORT_MANIFEST, INFO, ONNX, TORCHSCRIPT, WEIGHTS, load_student, quiet_torchscript

FORMATS = ("torchscript", "onnx")


def _find_student(ctx, artifact: Path | None = None):
    """The student artifact to export: the one given, else the newest in the run directory."""
    from relaxkd.artifacts import ArtifactStore

    damaged: list[tuple[Path, str]] = []
    if artifact is not None:
        found = [a for a in ArtifactStore(artifact.parent).artifacts(STAGE, verify=True, damaged=damaged)
                 if a.path == artifact]
        for path, reason in damaged:
            if path == artifact:
                raise UserError(f"distill artifact {artifact} is damaged ({reason}); rerun `relaxkd distill` to rebuild it")
        if not found:
            raise UserError(f"{str(artifact)!r} is not a complete distill artifact; pass a distill-* directory of a run")
        return _typed(found[0])
    artifacts = ctx.store.artifacts(STAGE, verify=True, damaged=damaged)  # every byte as the manifest says
    if not artifacts and damaged:
        path, reason = damaged[0]
        raise UserError(f"distill artifact {path} is damaged ({reason}); rerun `relaxkd distill` to rebuild it")
    if not artifacts:
        raise UserError(f"no trained student in {str(ctx.cfg.run_dir)!r}; run `relaxkd distill` first")
    return _typed(max(artifacts, key=lambda a: a.manifest.get("created", "")))


def _typed(art):
    """The student artifact, its record (student.json) read as the distill stage wrote it (records.ModelInfo)."""
    read_record(ModelInfo, art.file(INFO))
    return art


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
    model, info = load_student(art.path, f"delete {art.path} and rerun `relaxkd distill`")
    from relaxkd.artifacts import atomic_output, make_dir

    make_dir(out, "--out")
    written = [out / WEIGHTS, out / INFO]
    for path in written:  # each file appears whole or not at all (a full disk leaves the old one)
        with atomic_output(path) as tmp:
            shutil.copyfile(art.path / path.name, tmp)
    size = int(info.get("image_size", 224))
    example = torch.zeros(1, 3, size, size)
    path = out / (TORCHSCRIPT if fmt == "torchscript" else ONNX)
    with atomic_output(path) as tmp, quiet_torchscript():
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
    say(f"export: replaced the previous export in {out} ({', '.join(previous)}){removed}")


#: the manifest's kind: what tells an export folder's manifest.json from a user's file
EXPORT_KIND = "relaxkd-export"


def _write_export_manifest(out: Path, files: list[Path], source: str | None = None) -> None:
    from relaxkd.artifacts import MANIFEST_DIGEST, file_sha256, manifest_digest, write_json

    manifest = {"kind": EXPORT_KIND, "files": {p.name: file_sha256(p) for p in files}}
    if source is not None:
        manifest["source"] = source  # the distill artifact exported
    manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
    write_json(out / EXPORT_MANIFEST, manifest)
