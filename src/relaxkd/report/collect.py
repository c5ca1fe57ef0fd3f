"""What a run directory holds, read back for the report: trained models, sweep trials, their seeds.

Everything here reads artifact files (``metrics.json``, ``teacher.json``, ``manifest.json``, the
``sweep-<family>.json`` records); nothing trains. Missing files make empty cells, never errors.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from relaxkd.console import say
from relaxkd.names import TX
from relaxkd.records import Metrics, ModelInfo, Provenance

#: the record files of trained models (a validation history): ``kind`` says what the model is
MODEL_RECORDS = ("student.json", "teacher.json")
#: the kinds a model record declares (relaxkd.stages.specs.model_info)
UNIMODAL, MULTIMODAL, STUDENT = "unimodal", "multimodal", "student"
#: the paper's names for the default T_m members (T1s T2w T3s: ResNet50, strong/weak/strong augmentation)
MEMBER_ALIASES = {"strong": "T1s", "weak": "T2w", "strong2": "T3s",
                  "expert_many": "E_many", "expert_medium": "E_medium", "expert_few": "E_few"}
R = TypeVar("R", Metrics, ModelInfo)
LOSS_NAMES = {"kd": "KD", "zscore": "z-score KD", "dkd": "DKD", "none": "no KD", "lfme": "LFME", "ffkd": "FFKD", "dmae": "DMAE"}


def read_json(path: str | Path | None, name: str | None = None) -> Any:
    """A JSON file (``path/name``), or {} when it does not exist or cannot be read."""
    if not path:
        return {}
    target = Path(path) / name if name else Path(path)
    try:
        data = target.read_bytes()
        if not _as_manifest_says(target, data):
            return {}
        return json.loads(data)
    except (OSError, ValueError):
        return {}


def _as_manifest_says(target: Path, data: bytes) -> bool:
    """A file inside an artifact directory is read only when it is the one its manifest records."""
    import hashlib

    from relaxkd.artifacts import MANIFEST, MANIFEST_DIGEST, manifest_digest

    if target.name == MANIFEST:
        manifest = json.loads(data)
        return isinstance(manifest, dict) and manifest.get(MANIFEST_DIGEST) == manifest_digest(manifest)
    manifest_path = target.parent / MANIFEST
    if not manifest_path.is_file():
        return True  # not an artifact's file (run.json, sweep records)
    manifest = json.loads(manifest_path.read_text())
    files = manifest.get("files") if isinstance(manifest, dict) else None
    return (isinstance(files, dict) and manifest.get(MANIFEST_DIGEST) == manifest_digest(manifest)
            and files.get(target.name) == hashlib.sha256(data).hexdigest())


def typed(model: type[R], data: dict[str, Any], path: Path) -> R | None:
    """A record file's contents as its typed model; None (said on stderr, naming the key) when it is
    not one: a renamed or retyped key is seen, not read as an empty cell."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(the file)"
        say(f"report: {path} left out: {where}: {first['msg']}")
        return None


def member_alias(name: str) -> str:
    return MEMBER_ALIASES.get(name, name)


def mix_label(proportions: dict[str, float] | None, text_only: bool = False) -> str:
    """``{gt: 0.2, wn: 0.8}`` -> ``gt 20 % / wn 80 %`` (modes with a zero share left out)."""
    if not proportions:
        return ""
    parts = [f"{mode} {100 * share:.0f} %" for mode, share in proportions.items() if share > 0]
    return " / ".join(parts) + (" (text only)" if text_only else "")


@dataclass
class Model:
    """One trained artifact (a T_m member, a T_x or a student) and what the report says about it."""

    #: what its record file (teacher.json / student.json) says it is: unimodal, multimodal or student
    kind: str
    key: str
    path: Path
    metrics: Metrics
    info: ModelInfo
    manifest: dict[str, Any]
    #: where it appears: "main run", "table1 ours (seed 1)", ...
    uses: list[str] = field(default_factory=list)

    @property
    def prov(self) -> Provenance:
        return self.metrics.provenance

    @property
    def top1(self) -> float | None:
        value = self.metrics.top1
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    @property
    def seed(self) -> Any:
        return self.prov.seed

    @property
    def spec(self) -> dict[str, Any]:
        return self.manifest.get("spec", {}) or {}

    def teacher_keys(self) -> dict[str, str]:
        """A student's teachers: ``{name: artifact key}`` from its manifest's spec."""
        return dict(self.spec.get("teachers", {}) or {})

    @property
    def role(self) -> str:
        """What it is, in the glossary's words."""
        if self.kind == UNIMODAL:
            name = self.info.name or "?"
            return f"T_m member {member_alias(name)} ({self.info.arch or '?'}, {self.info.aug or '?'} aug.)"
        if self.kind == MULTIMODAL:
            bank = self.prov.bank or "learnable"
            return f"T_x [{mix_label(self.prov.proportions, bool(self.prov.text_only))}]" + (
                " fixed bank" if bank == "fixed" else ""
            )
        return f"S_s {self.info.arch or ''} ← {teachers_label(self.prov.teachers or [], self.prov.loss)}"


def teachers_label(teachers: list[str], loss: str | None) -> str:
    """``[strong, weak, tx]`` + kd -> ``T_m (T1s T2w) + T_x, KD``; no teacher -> ``no teacher (CE only)``."""
    if loss == "none" or not teachers:
        return "no teacher (CE only)"
    image = [member_alias(t) for t in teachers if t != TX]
    parts = []
    if image:
        parts.append(f"T_m ({' '.join(image)})" if len(image) > 1 else image[0])
    if TX in teachers:
        parts.append("T_x")
    return " + ".join(parts) + f", {LOSS_NAMES.get(loss or 'kd', loss)}"


@dataclass
class Trial:
    family: str
    name: str
    labels: dict[str, Any]
    overrides: list[str]
    #: seed -> {"tx": path, "attribute": path, "distill": path}
    runs: dict[int, dict[str, str]]

    def models(self, run: RunView, what: str) -> dict[int, Model]:
        """This trial's artifact of kind ``what`` (tx, distill, attribute's T_x...) per seed."""
        found = {}
        for seed, arts in sorted(self.runs.items()):
            model = run.model_at(arts.get(what))
            if model is not None:
                found[seed] = model
        return found

    def values(self, run: RunView, what: str) -> dict[int, float]:
        return {s: m.top1 for s, m in self.models(run, what).items() if m.top1 is not None}

    def shares(self, run: RunView) -> dict[int, float]:
        """Image share of this trial's T_x attribution per seed."""
        out = {}
        for seed, arts in sorted(self.runs.items()):
            share = read_json(run.locate(arts.get("attribute")), "attribution.json").get("image_share")
            if share is not None:
                out[seed] = float(share)
        return out


def trial_runs(trial: dict[str, Any]) -> dict[int, dict[str, str]]:
    """Seed -> artifacts of one trial record (``runs`` per seed; older records: ``artifacts`` only)."""
    runs = trial.get("runs")
    if runs:
        return {int(seed): arts for seed, arts in runs.items()}
    arts = trial.get("artifacts", {})
    seed = None
    for path in arts.values():
        seed = read_json(path, "metrics.json").get("provenance", {}).get("seed")
        if seed is None:
            seed = read_json(path, "manifest.json").get("seed")
        if seed is not None:
            break
    return {int(seed or 0): arts} if arts else {}


class RunView:
    """The trained models and sweep records of one run directory."""

    def __init__(self, run_dir: Path, artifacts):
        self.run_dir = run_dir
        self.models: list[Model] = []
        self.by_key: dict[str, Model] = {}
        self.by_path: dict[str, Model] = {}
        self.other = artifacts
        for art in artifacts:
            found = next(((name, data) for name in MODEL_RECORDS if (data := read_json(art.path, name))), None)
            if found is None:
                continue  # not a trained model
            info = typed(ModelInfo, found[1], Path(art.path) / found[0])
            metrics = typed(Metrics, read_json(art.path, "metrics.json"), Path(art.path) / "metrics.json")
            if info is None or metrics is None or info.subset:
                continue  # a record this version cannot read (said on stderr), or an LFME expert (its student reports it)
            model = Model(info.kind, art.key, Path(art.path), metrics, info, art.manifest)
            self.models.append(model)
            self.by_key[art.key] = model
            self.by_path[str(Path(art.path).resolve())] = model
        self.trials: dict[str, list[Trial]] = {}
        for record_path in sorted(run_dir.glob("sweep-*.json")):
            family = record_path.stem.removeprefix("sweep-")
            record = read_json(record_path)
            trials = [
                Trial(family, name, t.get("labels", {}), t.get("overrides", []), trial_runs(t)) for name, t in record.items()
            ]
            order = _definition_order(family)
            self.trials[family] = sorted(trials, key=lambda t: order.get(t.name, len(order)))
        self.main = read_json(run_dir, "run.json").get("artifacts", {})
        self._mark_uses()

    def locate(self, path: str | Path | None) -> Path | None:
        """An artifact path from a record: as written (relative to the run's working directory), or
        the directory of that name in this run directory (a report written from elsewhere)."""
        if not path:
            return None
        path = Path(path)
        return path if path.exists() else self.run_dir / path.name

    def model_at(self, path: str | Path | None) -> Model | None:
        if not path:
            return None
        return self.by_path.get(str(Path(path).resolve())) or self.by_key.get(Path(path).name.rsplit("-", 1)[-1])

    def _mark_uses(self) -> None:
        main_student = self.model_at(self.main.get("distill"))
        if main_student is not None:
            main_student.uses.append("main run")
            for _name, key in main_student.teacher_keys().items():
                if key in self.by_key:
                    self.by_key[key].uses.append("main run")
        for family, trials in self.trials.items():
            for trial in trials:
                for seed, arts in trial.runs.items():
                    tag = f"{family} {trial.name}" + (f" (seed {seed})" if len(trial.runs) > 1 else "")
                    for path in arts.values():
                        model = self.model_at(path)
                        if model is not None and tag not in model.uses:
                            model.uses.append(tag)

    def taught(self, teacher: Model) -> list[Model]:
        """The students that had ``teacher`` among their teachers."""
        return [m for m in self.models if m.kind == STUDENT and teacher.key in m.teacher_keys().values()]

    @property
    def seeds(self) -> list[int]:
        seeds = {s for trials in self.trials.values() for t in trials for s in t.runs}
        seeds |= {m.seed for m in self.models if isinstance(m.seed, int)}
        return sorted(seeds)

    @property
    def provenance(self) -> Provenance | None:
        return self.models[0].prov if self.models else None

    @property
    def caveat(self) -> bool:
        return any(m.prov.random_weight_clip or m.prov.demo_data for m in self.models)


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def fmt_mean_std(values: list[float], digits: int = 1) -> str:
    mean, std = mean_std(values)
    if mean is None:
        return "–"
    if std is None:
        return f"{mean:.{digits}f}" + (" (1 seed)" if values else "")
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def dataset_sizes(run_dir: Path, artifacts) -> dict[str, Any]:
    """Classes, train and validation sizes from the embed-images artifact (shapes only, no tensors read)."""
    sizes: dict[str, Any] = {}
    for art in artifacts:
        classes = read_json(art.path, "classes.json")  # the image embeddings' record of the dataset's classes
        if not classes:
            continue
        sizes["classes"] = classes.get("classes", [])
        sizes["synsets"] = classes.get("synsets", [])
        sizes["glosses"] = classes.get("glosses", [])
        sizes["senses"] = classes.get("senses", [])
        for key in ("sense_sources", "sense_runner_up", "sense_margin"):
            sizes[key] = classes.get(key, [])
        try:
            from safetensors import safe_open

            with safe_open(str(Path(art.path) / "embeddings.safetensors"), "pt") as fh:
                sizes["num_train"] = fh.get_slice("train").get_shape()[0]
                sizes["num_val"] = fh.get_slice("val").get_shape()[0]
        except Exception:  # noqa: BLE001 - sizes are optional in a report
            pass
        break
    return sizes


def _definition_order(family: str) -> dict[str, int]:
    """Trial name -> its place in the family's definition (ours first in Table 1), for row order."""
    try:
        from relaxkd.trials import select_trials

        return {t.name: i for i, t in enumerate(select_trials(family, None))}
    except Exception:  # noqa: BLE001 - an unknown family keeps the record's order
        return {}
