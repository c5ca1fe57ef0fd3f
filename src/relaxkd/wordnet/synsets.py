"""Class name (or ImageNet wnid) → WordNet 3.0 noun synset name such as ``goldfish.n.01``.

Precedence for each class: the user's overrides, then the dataset's wnid, then the overrides that
ship for known datasets (``overrides/<dataset>.yaml``), then the most likely pictured noun sense of
the lemma the name means (``wordnet/senses.py``; with real CLIP weights the embed stage re-picks it
by the class's images).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from nltk.corpus.reader.wordnet import Synset, WordNetCorpusReader

from relaxkd import safe_yaml
from relaxkd.errors import UserError
from relaxkd.wordnet.install import ensure_wordnet
from relaxkd.wordnet.senses import (
    class_senses,
    nfc,
    rank_senses_by_images,
    sense_text,
    unknown_names_message,
    yaml_key,
)

if TYPE_CHECKING:
    import torch

OVERRIDES_CONFIG_KEY = "data.synset_overrides"
WNID_PATTERN = re.compile(r"^n\d{8}$")
# Long-tailed variants share their balanced dataset's classes.
_DATASET_ALIASES = {"cifar100_lt": "cifar100", "cifar_100": "cifar100", "cifar_100_lt": "cifar100"}

Overrides = Mapping[str, str] | str | Path | None


def normalise_class_name(name: str) -> str:
    """Key under which class names are compared: Unicode NFC, lower case, spaces, ``_`` and ``-`` unified."""
    return "_".join(nfc(name).replace("_", " ").replace("-", " ").split()).lower()


def wnid_to_synset(wnid: str, wn: WordNetCorpusReader | None = None) -> Synset:
    """``n01440764`` → ``Synset('tench.n.01')`` (an ImageNet wnid is a noun offset)."""
    wn = wn or ensure_wordnet()
    if not WNID_PATTERN.match(str(wnid)):
        raise UserError(f"{wnid!r} is not a WordNet noun id; expected 'n' and 8 digits, e.g. n01440764")
    try:
        return wn.synset_from_pos_and_offset("n", int(wnid[1:]))
    except Exception:  # NLTK raises WordNetError or ValueError for an offset it does not know
        raise UserError(f"WordNet 3.0 has no noun synset with id {wnid!r}") from None


def synset_by_name(name: str, wn: WordNetCorpusReader, source: str) -> Synset:
    """A noun synset from ``goldfish.n.01`` or a wnid; bad names raise UserError naming ``source``."""
    name = str(name).strip()
    if WNID_PATTERN.match(name):
        return wnid_to_synset(name, wn)
    try:
        synset = wn.synset(name)
    except Exception:  # WordNetError for an unknown lemma/sense, ValueError for a malformed name
        raise UserError(
            f"{source}: {name!r} is not a WordNet 3.0 synset; use a name like 'goldfish.n.01' "
            "or a wnid like 'n01443537'"
        ) from None
    if synset.pos() != "n":
        raise UserError(f"{source}: {name!r} is not a noun synset; classes need '<lemma>.n.<NN>'")
    return synset


def _read_overrides_file(path: Path) -> dict[str, str]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"synset override file {path} does not exist (set by {OVERRIDES_CONFIG_KEY})")

    try:
        loaded = safe_yaml.load(safe_yaml.read_text(path, "synset override file"), f"synset override file {path}")
    except yaml.YAMLError as exc:
        raise UserError(f"synset override file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
        raise UserError(
            f"synset override file {path} must map class names to synset names, one "
            "`class_name: synset_name` per line (e.g. `aquarium_fish: fish.n.01`)"
        )
    return {str(key): value for key, value in loaded.items()}


def load_overrides(overrides: Overrides) -> dict[str, str]:
    """Overrides as ``{normalised class name: synset name}`` from a dict or a YAML file path."""
    if overrides is None:
        return {}
    if isinstance(overrides, (str, Path)):
        overrides = _read_overrides_file(Path(overrides))
    return {normalise_class_name(key): str(value) for key, value in overrides.items()}


def builtin_override_path(dataset: str | None) -> Path | None:
    """The override file shipped for ``dataset`` (cifar100, cifar100_lt, scene, utkface, digits)."""
    if not dataset:
        return None
    key = str(dataset).strip().lower().replace("-", "_")
    key = _DATASET_ALIASES.get(key, key)
    resource = resources.files("relaxkd.wordnet").joinpath("overrides").joinpath(f"{key}.yaml")
    return Path(str(resource)) if resource.is_file() else None


def builtin_override_datasets() -> list[str]:
    folder = resources.files("relaxkd.wordnet").joinpath("overrides")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _user_overrides(overrides: Overrides, wn: WordNetCorpusReader) -> dict[str, Synset]:
    """The user's ``class: synset`` overrides, each checked against WordNet."""
    where = f"synset override file {overrides}" if isinstance(overrides, (str, Path)) else "synset overrides"
    return {key: synset_by_name(value, wn, f"{where}, class {key!r}") for key, value in load_overrides(overrides).items()}


def check_distinct_names(class_names: Sequence[str]) -> None:
    """Refuse class names that differ only in case, spacing, ``_``/``-`` or Unicode form (``Cat``, ``cat``):
    overrides are keyed by the normalised name, so such classes could never get different senses."""
    seen: dict[str, str] = {}
    for name in class_names:
        key = normalise_class_name(name)
        if key in seen:
            raise UserError(
                f"classes {nfc(seen[key])!r} and {nfc(name)!r} differ only in case, spaces, '_' or '-': "
                "they would be one WordNet sense; merge the two folders or rename one"
            )
        seen[key] = str(name)


def resolve_class_synsets(
    class_names: Sequence[str],
    wnids: Sequence[str] | None = None,
    overrides: Overrides = None,
    dataset: str | None = None,
    wn: WordNetCorpusReader | None = None,
    sources: list[str] | None = None,
) -> list[Synset]:
    """Like :func:`class_synsets` but returns NLTK ``Synset`` objects.

    ``sources``, when given, receives one entry per class saying where its sense came from:
    ``override`` (the user's file), ``wnid``, ``built-in`` (the dataset's shipped overrides) or
    ``default`` (:func:`relaxkd.wordnet.senses.rank_senses`' best guess among the name's senses).
    Every name WordNet does not know is listed in one UserError with its closest nouns.
    """
    wn = wn or ensure_wordnet()
    class_names = list(class_names)
    if wnids is not None and len(wnids) != len(class_names):
        raise UserError(f"got {len(wnids)} wnids for {len(class_names)} classes")
    if wnids is None:
        check_distinct_names(class_names)

    user = _user_overrides(overrides, wn)
    builtin_path = builtin_override_path(dataset)
    builtin = load_overrides(builtin_path)

    resolved: list[Synset | None] = []
    unresolved: list[str] = []
    for index, name in enumerate(class_names):
        key = normalise_class_name(name)
        if key in user:
            resolved.append(user[key])
            source = "override"
        elif wnids is not None:
            resolved.append(wnid_to_synset(wnids[index], wn))
            source = "wnid"
        elif key in builtin:
            resolved.append(synset_by_name(builtin[key], wn, f"built-in overrides {builtin_path}"))
            source = "built-in"
        elif WNID_PATTERN.match(str(name)):
            resolved.append(wnid_to_synset(str(name), wn))
            source = "wnid"
        else:
            senses = class_senses(name, wn)[1]
            resolved.append(senses[0] if senses else None)
            source = "default"
            if not senses:
                unresolved.append(nfc(name))
        if sources is not None:
            sources.append(source)
    if unresolved:
        raise UserError(unknown_names_message(unresolved, wn, OVERRIDES_CONFIG_KEY))
    return resolved  # type: ignore[return-value]


def class_synsets(
    class_names: Sequence[str],
    wnids: Sequence[str] | None = None,
    overrides: Overrides = None,
    dataset: str | None = None,
    wn: WordNetCorpusReader | None = None,
) -> list[str]:
    """One WordNet noun synset name (``goldfish.n.01``) per class, in class order.

    ``wnids`` (``n01440764``) map directly; otherwise each class name resolves to its first noun
    synset, after ``overrides`` (a ``{class_name: synset_name}`` dict or YAML file path) and the
    built-in overrides of ``dataset``. An unknown class or a bad synset name raises UserError.
    """
    return [s.name() for s in resolve_class_synsets(class_names, wnids, overrides, dataset, wn)]


def describe_class_senses(
    class_names: Sequence[str],
    wnids: Sequence[str] | None = None,
    overrides: Overrides = None,
    dataset: str | None = None,
    wn: WordNetCorpusReader | None = None,
) -> list[dict[str, object]]:
    """Per class: its synset, the sense's gloss, how many noun senses the name has, where it came from.

    ``ambiguous`` is true when the sense is a guess among several for the name (nobody chose it):
    ``star`` -> the celestial body, ``cross`` -> the wooden structure. ``alternatives`` lists the
    name's other senses, most likely first. Callers print these (:func:`format_senses`), may re-rank
    them by the class's images (:func:`rerank_by_images`) and warn with :func:`ambiguity_warning`.
    """
    wn = wn or ensure_wordnet()
    sources: list[str] = []
    resolved = resolve_class_synsets(class_names, wnids, overrides, dataset, wn, sources=sources)
    rows = []
    for name, synset, source in zip(class_names, resolved, sources):
        candidates = class_senses(name, wn)[1] if source == "default" else []
        senses = len(candidates) if source == "default" else None
        rows.append({
            "class": nfc(name),
            "synset": synset.name(),
            "gloss": synset.definition(),
            "source": source,
            "senses": senses,
            "ambiguous": bool(senses and senses > 1),
            "alternatives": [(c.name(), c.definition()) for c in candidates if c != synset],
        })
    return rows


def rerank_by_images(
    rows: list[dict[str, object]],
    mean_images: torch.Tensor,
    embed_texts: Callable[[list[str]], torch.Tensor],
    wn: WordNetCorpusReader | None = None,
) -> list[dict[str, object]]:
    """Re-pick each guessed sense by the class's images: the sense whose ``lemma, gloss`` text
    embedding is closest to the class's mean image embedding (``mean_images[c]``), among its common
    nouns (instances only when it has no other). Overrides, wnids and built-in senses stay; a
    re-ranked row records the runner-up and the cosine margin."""
    wn = wn or ensure_wordnet()
    for index, row in enumerate(rows):
        if not row["ambiguous"]:
            continue
        names = [str(row["synset"])] + [name for name, _ in row["alternatives"]]  # type: ignore[attr-defined]
        every = [wn.synset(name) for name in names]
        # one person or place is never the class when a common noun is among its senses
        synsets = [s for s in every if not s.instance_hypernyms()] or every
        if len(synsets) < 2:
            continue
        order, scores = rank_senses_by_images(mean_images[index], embed_texts([sense_text(s) for s in synsets]))
        ranked = [synsets[i] for i in order] + [s for s in every if s not in synsets]
        row.update(
            synset=ranked[0].name(), gloss=ranked[0].definition(), source="images",
            runner_up=ranked[1].name(), margin=round(scores[0] - scores[1], 4),
            alternatives=[(s.name(), s.definition()) for s in ranked[1:]],
        )
    return rows


def format_senses(rows: Sequence[dict[str, object]], max_alternatives: int = 4) -> list[str]:
    """One line per class: ``crane -> crane.n.05 (guess among 7 noun senses): large long-necked wading bird ...``."""
    width = max((len(str(r["class"])) for r in rows), default=0)
    lines = []
    for r in rows:
        how = {"override": "your override", "wnid": "wnid", "built-in": "built-in override"}.get(str(r["source"]))
        if r["source"] == "images":
            how = (f"closest of {r['senses']} noun senses to the class's images; "
                   f"runner-up {r['runner_up']} by {r['margin']:.3f} cosine")
        elif how is None:
            how = f"guess among {r['senses']} noun senses" if r["ambiguous"] else "only noun sense"
        lines.append(f"{str(r['class']):<{width}} -> {r['synset']} ({how}): {r['gloss']}")
        alternatives = list(r.get("alternatives") or [])  # type: ignore[call-overload]
        for name, gloss in alternatives[:max_alternatives]:
            lines.append(f"{'':<{width}}    or {name}: {gloss}")
        if len(alternatives) > max_alternatives:
            lines.append(f"{'':<{width}}    ... {len(alternatives) - max_alternatives} more")
    return lines


def ambiguity_warning(rows: Sequence[dict[str, object]], overrides_file: str | Path | None, suggested: str | Path) -> str | None:
    """The warning for class names whose sense is a guess among several, naming the file that fixes it."""
    ambiguous = [r for r in rows if r["ambiguous"]]
    if not ambiguous:
        return None
    names = ", ".join(f"{r['class']!r} ({r['senses']} senses)" for r in ambiguous)
    first = ambiguous[0]
    alternatives = list(first.get("alternatives") or [])  # type: ignore[call-overload]
    example = alternatives[0][0]
    target = overrides_file or suggested
    how = (f"add lines to your override file {target}" if overrides_file
           else f"write them to a file such as {target} and set {OVERRIDES_CONFIG_KEY}={target}")
    taken = ("the sense closest to the class's images" if any(r["source"] == "images" for r in ambiguous)
             else "the most likely pictured sense")
    return (
        f"class names with several WordNet noun senses: {names}; {taken} was taken (glosses above). "
        f"If a gloss is wrong, pick another sense (listed under it) with a `class_name: synset` line, "
        f"e.g. `{yaml_key(str(first['class']))}: {example}`: {how}"
    )


def shared_sense_warning(rows: Sequence[dict[str, object]]) -> str | None:
    """The warning for distinct class names that landed on one sense (``couch``, ``sofa``): two
    classes the text side cannot tell apart."""
    by_synset: dict[str, list[str]] = {}
    for r in rows:
        by_synset.setdefault(str(r["synset"]), []).append(str(r["class"]))
    shared = {synset: names for synset, names in by_synset.items() if len(names) > 1}
    if not shared:
        return None
    groups = "; ".join(f"{' and '.join(repr(n) for n in names)} are all {synset}" for synset, names in shared.items())
    return (f"several classes, one WordNet sense: {groups}; their text embeddings are identical. Give each its own "
            f"sense with a `class_name: synset` line in {OVERRIDES_CONFIG_KEY}, or merge the folders")
