"""Class names as people write them → WordNet lemma → the noun sense an image class most likely means.

- :func:`name_forms` / :func:`class_lemma`: ``sea-lion``, ``Sea Lions``, ``fire.truck``, ``FireTruck``
  and ``café`` (NFD or NFC) reach the lemmas ``sea_lion``, ``fire_truck`` and ``cafe`` through
  WordNet's own morphology (``morphy``: plurals and inflections).
- :func:`rank_senses`: a name's noun senses, most likely pictured first: common nouns before
  instances (one person or place), a first sense that is physical and most of the name's tagged
  uses, senses whose head lemma is the name, then picturable lexicographer files (animals,
  artefacts, food, plants, other physical things) before abstract ones, WordNet's order last.
  ``benchmarks/bench_senses.py`` measures it.
- :func:`rank_senses_by_images`: with real CLIP weights, the class's mean image embedding against
  each sense's ``lemma, gloss`` text embedding.
- :func:`suggest_nouns`: the closest WordNet nouns of a name WordNet does not know.
"""
from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from nltk.corpus.reader.wordnet import Synset, WordNetCorpusReader

if TYPE_CHECKING:
    import torch

# Lexicographer files (lexnames(5WN)) by how likely an image class means them, best first; the rest
# (acts, cognition, communication, quantities, ...) are abstract and rank last. Measured on
# ImageNet-1k's classes (benchmarks/bench_senses.py): animals win over artefacts and food, artefacts
# over food, food (the fruit) over the plant.
PICTURABLE_TIERS: tuple[tuple[str, ...], ...] = (
    ("noun.animal",),
    ("noun.artifact",),
    ("noun.food",),
    ("noun.plant",),
    ("noun.object", "noun.body", "noun.substance", "noun.location", "noun.phenomenon", "noun.shape", "noun.person"),
)
_TIER = {lexname: len(PICTURABLE_TIERS) - i for i, tier in enumerate(PICTURABLE_TIERS) for lexname in tier}


def nfc(text: str) -> str:
    """Unicode NFC: ``café`` typed on Linux and ``café`` from a macOS folder name compare equal."""
    return unicodedata.normalize("NFC", str(text))


def _ascii_folded(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def name_forms(name: str) -> list[str]:
    """Spellings of a class name to look up in WordNet, most literal first (lower case, ``_`` for spaces).

    WordNet keeps some hyphens (``t-shirt``, ``five-spot``), so the literal form comes before the
    one with hyphens and dots as word breaks; camelCase splits and accent folding come last.
    """
    text = " ".join(nfc(name).split())
    candidates = [
        text,
        re.sub(r"[-.]+", " ", text),
        re.sub(r"(?<=[a-z])(?=[A-Z])", " ", re.sub(r"[-.]+", " ", text)),
        re.sub(r"[-.]+", "", text),
    ]
    candidates += [_ascii_folded(form) for form in candidates]
    forms: list[str] = []
    for form in candidates:
        form = "_".join(form.replace("_", " ").split()).lower()
        if form and form not in forms:
            forms.append(form)
    return forms


def _base_forms(form: str, wn: WordNetCorpusReader) -> set[str]:
    """What WordNet's noun morphology may reduce ``form`` to (``tigers`` → ``tigers``, ``tiger``)."""
    bases = {form, wn.morphy(form, "n") or form}
    for ending, replacement in wn.MORPHOLOGICAL_SUBSTITUTIONS["n"]:
        if form.endswith(ending):
            bases.add(form[: len(form) - len(ending)] + replacement)
    return bases


def _is_instance(synset: Synset) -> bool:
    return bool(synset.instance_hypernyms())


def picturable_tier(synset: Synset) -> int:
    return _TIER.get(synset.lexname(), 0)


#: a name's first sense is kept when it is a physical thing and at least half of the name's
#: sense-tagged uses (WordNet's SemCor counts; at least DOMINANT_MIN_USES of them) are that sense:
#: ``man`` the adult male (not the game piece), ``couch`` the sofa, ``baby`` the child
DOMINANT_SHARE, DOMINANT_MIN_USES = 0.5, 5


def _dominant(senses: list[Synset], bases: set[str]) -> bool:
    uses = [sum(lemma.count() for lemma in s.lemmas() if lemma.name().lower() in bases) for s in senses]
    total = sum(uses)
    return total >= DOMINANT_MIN_USES and uses[0] >= DOMINANT_SHARE * total and picturable_tier(senses[0]) > 0


def class_senses(name: str, wn: WordNetCorpusReader) -> tuple[str | None, list[Synset]]:
    """The lemma a class name means and its noun senses, the one an image class most likely means first.

    ``crane`` → the bird before the machine and the writer (an instance); ``Tigers`` → the animal
    before "a fierce person" and the Tamil Tigers; ``seal`` → the animal before sealing wax. Order:
    common nouns before instances, a dominant physical first sense (:data:`DOMINANT_SHARE`), senses
    whose head lemma is the name, picturable lexicographer files (:data:`PICTURABLE_TIERS`),
    WordNet's order. ``(None, [])`` when WordNet knows no form.
    """
    for form in name_forms(name):
        senses = wn.synsets(form, pos="n")  # all of morphy's analyses
        if not senses:
            continue
        bases = _base_forms(form, wn)
        dominant = _dominant(senses, bases)
        keys = [(_is_instance(s), not (i == 0 and dominant), s.lemma_names()[0].lower() not in bases, -picturable_tier(s), i)
                for i, s in enumerate(senses)]
        ranked = [senses[key[-1]] for key in sorted(keys)]
        names = [lemma.lower() for lemma in ranked[0].lemma_names()]
        return next((n for n in names if n in bases), wn.morphy(form, "n") or form), ranked
    return None, []


def class_lemma(name: str, wn: WordNetCorpusReader) -> str | None:
    """The WordNet noun lemma a class name means (``Sea-Lions`` → ``sea_lion``), or None."""
    return class_senses(name, wn)[0]


def rank_senses(lemma: str, wn: WordNetCorpusReader) -> list[Synset]:
    """Every noun sense of ``lemma``, most likely pictured first (see :func:`class_senses`)."""
    return class_senses(lemma, wn)[1]


def sense_text(synset: Synset) -> str:
    """What a sense says in a prompt template: its head lemma and gloss (``crane, large long-necked ...``)."""
    return f"{synset.lemma_names()[0].replace('_', ' ')}, {synset.definition()}"


def rank_senses_by_images(mean_image: torch.Tensor, sense_embeddings: torch.Tensor) -> tuple[list[int], list[float]]:
    """Candidate senses ordered by the cosine of their text embedding to the class's mean image embedding.

    ``mean_image`` is ``[D]`` (the mean of the class's CLIP image embeddings), ``sense_embeddings``
    ``[S, D]`` (each sense's :func:`sense_text` through the prompt templates). Returns the order,
    best first, and the cosine of each sense in that order.
    """
    import torch  # noqa: PLC0415 - the wordnet package stays torch-free (validate's start-up)

    image = torch.nn.functional.normalize(mean_image.float(), dim=-1)
    texts = torch.nn.functional.normalize(sense_embeddings.float(), dim=-1)
    scores = texts @ image
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    return order, [float(scores[i]) for i in order]


@lru_cache(maxsize=2)
def _noun_lemmas(wn: WordNetCorpusReader) -> tuple[str, ...]:
    return tuple(sorted(set(wn.all_lemma_names(pos="n"))))


def suggest_nouns(name: str, wn: WordNetCorpusReader, limit: int = 3) -> list[Synset]:
    """The WordNet noun senses whose lemma is spelled closest to ``name`` (typos, odd compounds)."""
    lemmas = _noun_lemmas(wn)
    scored: dict[str, float] = {}
    for form in name_forms(name):
        for lemma in difflib.get_close_matches(form, lemmas, n=limit, cutoff=0.75):
            ratio = difflib.SequenceMatcher(None, form, lemma).ratio()
            scored[lemma] = max(ratio, scored.get(lemma, 0.0))
    found: list[Synset] = []
    for lemma in sorted(scored, key=lambda lemma: -scored[lemma]):
        best = rank_senses(lemma, wn)[0]
        if best not in found:
            found.append(best)
    return found[:limit]


def _short(gloss: str, width: int = 60) -> str:
    return gloss if len(gloss) <= width else gloss[: width - 1].rsplit(" ", 1)[0] + " …"


def yaml_key(name: str) -> str:
    """A class name as a YAML mapping key that pastes safely (quoted when YAML would misread it)."""
    return (
        name
        if re.fullmatch(r"[A-Za-z][\w .-]*", name) and not name.endswith((" ", "."))
        else json.dumps(name, ensure_ascii=False)
    )


def unknown_names_message(names: Sequence[str], wn: WordNetCorpusReader, config_key: str) -> str:
    """One line for every class WordNet does not know, each with ready-to-paste override lines."""
    parts = []
    for name in names:
        suggestions = suggest_nouns(name, wn)
        if suggestions:
            lines = " or ".join(f"`{yaml_key(name)}: {s.name()}` ({_short(s.definition())})" for s in suggestions)
        else:
            lines = f"no WordNet noun is spelled like it; choose the nearest thing it shows, e.g. `{yaml_key(name)}: object.n.01`"
        parts.append(f"{name!r}: {lines}")
    count = f"{len(names)} classes" if len(names) > 1 else "class"
    return (
        f"WordNet 3.0 has no noun for {count} {', '.join(repr(n) for n in names)}; write a YAML file with one "
        f"`class_name: synset_name` line per class and set {config_key}=<that file>. Closest nouns: " + "; ".join(parts)
    )
