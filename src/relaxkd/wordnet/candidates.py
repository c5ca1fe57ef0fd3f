"""Candidate nouns for Algorithm 1 (docs/method.md §3): all WordNet nouns or the classes' neighbourhood.

Nouns are WordNet lemma spellings (``sea_lion``); :func:`lemma_to_text` gives the prompt text.
Every list is deduplicated in first-seen order, with related synsets taken in name order, so it
is identical from run to run.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Literal

from nltk.corpus.reader.wordnet import Synset, WordNetCorpusReader

from relaxkd.errors import UserError
from relaxkd.wordnet.install import ensure_wordnet
from relaxkd.wordnet.synsets import normalise_class_name, synset_by_name

CANDIDATE_KINDS = ("all", "neighbourhood")
CandidateKind = Literal["all", "neighbourhood"]


def lemma_to_text(lemma: str) -> str:
    """``sea_lion`` → ``sea lion``: the word as it goes into a prompt template."""
    return lemma.replace("_", " ")


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


@functools.cache
def _noun_lemma_entries(wn: WordNetCorpusReader) -> tuple[str, ...]:
    # all_synsets walks data.noun in file (offset) order: deterministic, and takes seconds.
    return tuple(name for synset in wn.all_synsets("n") for name in synset.lemma_names())


@functools.cache
def _all_noun_lemmas(wn: WordNetCorpusReader) -> tuple[str, ...]:
    return tuple(_unique(_noun_lemma_entries(wn)))


def noun_lemma_entries(wn: WordNetCorpusReader | None = None) -> list[str]:
    """``lemma_names()`` of every noun synset, duplicates kept (146,347 in WordNet 3.0)."""
    return list(_noun_lemma_entries(wn or ensure_wordnet()))


def all_noun_lemmas(wn: WordNetCorpusReader | None = None) -> list[str]:
    """Every distinct noun lemma of WordNet 3.0 (119,034 of 146,347 entries), first-seen order."""
    return list(_all_noun_lemmas(wn or ensure_wordnet()))


def _as_synsets(synsets: Iterable[Synset | str], wn: WordNetCorpusReader | None) -> list[Synset]:
    items = list(synsets)
    if any(isinstance(s, str) for s in items):
        wn = wn or ensure_wordnet()
    return [synset_by_name(s, wn, "class synsets") if isinstance(s, str) else s for s in items]


def _by_name(synsets: list[Synset]) -> list[Synset]:
    # NLTK keeps a synset's pointers in sets, so hypernyms()/hyponyms() come in an order that
    # follows the process's string-hash seed: sort them, or the noun list differs between runs
    return sorted(synsets, key=lambda s: s.name())


def _hypernym_levels(synset: Synset, depth: int) -> Iterable[Synset]:
    """Hypernyms breadth-first, nearest first, up to ``depth`` levels (instance ones included)."""
    seen: set[Synset] = set()
    level = [synset]
    for _ in range(depth):
        level = [h for s in level for h in _by_name(s.hypernyms() + s.instance_hypernyms())]
        level = [h for h in dict.fromkeys(level) if h not in seen]
        seen.update(level)
        yield from level


def neighbourhood_nouns(
    synsets: Iterable[Synset | str],
    hypernym_depth: int = 2,
    include_hyponyms: bool = True,
    wn: WordNetCorpusReader | None = None,
) -> list[str]:
    """Lemmas near the classes: each synset's synonyms, hypernyms up to ``hypernym_depth`` levels
    and (optionally) its direct hyponyms; class by class, deduplicated in first-seen order."""
    if hypernym_depth < 0:
        raise UserError(f"nouns.hypernym_depth must be >= 0, got {hypernym_depth}")
    lemmas: list[str] = []
    for synset in _as_synsets(synsets, wn):
        lemmas += synset.lemma_names()
        for hypernym in _hypernym_levels(synset, hypernym_depth):
            lemmas += hypernym.lemma_names()
        if include_hyponyms:
            for hyponym in _by_name(synset.hyponyms()):
                lemmas += hyponym.lemma_names()
    return _unique(lemmas)


def candidate_nouns(
    kind: CandidateKind,
    class_synsets: Sequence[Synset | str] | None,
    class_names: Sequence[str],
    exclude_class_names: bool = False,
    hypernym_depth: int = 2,
    wn: WordNetCorpusReader | None = None,
) -> list[str]:
    """The candidate noun list for Algorithm 1 (config section ``nouns``).

    ``kind="all"``: every WordNet noun lemma; ``"neighbourhood"``: :func:`neighbourhood_nouns` of
    ``class_synsets``. ``exclude_class_names`` drops lemmas equal to a class name (case and
    underscore/space insensitive), e.g. to keep the exact label out of the relaxed bank.
    """
    if kind == "all":
        nouns = all_noun_lemmas(wn)
    elif kind == "neighbourhood":
        if not class_synsets:
            raise UserError("nouns.candidates=neighbourhood needs the classes' WordNet synsets")
        nouns = neighbourhood_nouns(class_synsets, hypernym_depth=hypernym_depth, wn=wn)
    else:
        raise UserError(f"unknown nouns.candidates {kind!r}; valid choices: {', '.join(CANDIDATE_KINDS)}")
    if exclude_class_names:
        excluded = {normalise_class_name(name) for name in class_names}
        nouns = [noun for noun in nouns if normalise_class_name(noun) not in excluded]
    if not nouns:
        raise UserError(
            f"no candidate nouns left (nouns.candidates={kind}, nouns.hypernym_depth={hypernym_depth}, "
            f"nouns.exclude_class_names={exclude_class_names}); use nouns.candidates=all, a larger "
            "nouns.hypernym_depth or nouns.exclude_class_names=false"
        )
    return nouns
