"""How often a class name's default WordNet sense is the synset the dataset means (BENCHMARKS.md).

Evaluation sets, all with known synsets and no images (text only):

- ``imagenet1k``: ImageNet-1k's 1,000 wnids (timm's ``imagenet_synsets.txt``), each class named by
  its synset's head lemma (``n02012849`` → ``crane``); the set the picturable order was read from.
- ``imagenet12k-heldout``: 2,000 wnids of timm's ImageNet-12k that are not in ImageNet-1k (seeded
  sample), named the same way; never looked at while choosing the rule.
- ``cifar100``: CIFAR-100's names WordNet knows, with the curated senses of
  ``wordnet/overrides/cifar100.yaml`` (first sense where the file has none).
- ``imagenet1k-written``: the ImageNet-1k names as people type folder names (``Sea-Lion``:
  underscores as hyphens, capitalised).

Rules compared: ``first sense`` (relaxkd before issue 24: WordNet's first noun sense of the name
with spaces as underscores) and ``default`` (``relaxkd.wordnet.class_synsets`` without a dataset's
overrides: name forms + morphology, no instances, head lemma, picturable lexicographer files).

    python benchmarks/bench_senses.py [--misses SET]
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import timm
import yaml

from relaxkd.wordnet import ensure_wordnet
from relaxkd.wordnet.senses import class_senses
from relaxkd.wordnet.synsets import builtin_override_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from data_fixtures import CIFAR100_CLASSES  # noqa: E402  (the project's one list of CIFAR-100 names)

HELDOUT_SIZE, HELDOUT_SEED = 2000, 0


def _wnids(name: str) -> list[str]:
    return (Path(timm.__file__).parent / "data" / "_info" / name).read_text().split()


def evaluation_sets(wn) -> dict[str, list[tuple[str, str]]]:
    """``{set: [(class name, true synset name)]}``."""
    def named(wnids: list[str]) -> list[tuple[str, str]]:
        synsets = [wn.synset_from_pos_and_offset("n", int(w[1:])) for w in wnids]
        return [(s.lemma_names()[0], s.name()) for s in synsets]

    in1k = _wnids("imagenet_synsets.txt")
    heldout = sorted(set(_wnids("imagenet12k_synsets.txt")) - set(in1k))
    random.Random(HELDOUT_SEED).shuffle(heldout)
    curated = yaml.safe_load(builtin_override_path("cifar100").read_text())
    cifar = [
        (n, curated.get(n) or wn.synsets(n, pos="n")[0].name())
        for n in CIFAR100_CLASSES
        if n in curated or wn.synsets(n, pos="n")
    ]
    imagenet = named(in1k)
    return {
        "imagenet1k": imagenet,
        "imagenet12k-heldout": named(heldout[:HELDOUT_SIZE]),
        "cifar100": cifar,
        "imagenet1k-written": [(name.replace("_", "-").title(), synset) for name, synset in imagenet],
    }


def first_sense(name: str, wn) -> str | None:
    senses = wn.synsets("_".join(name.split()), pos="n")
    return senses[0].name() if senses else None


def default_sense(name: str, wn) -> str | None:
    senses = class_senses(name, wn)[1]
    return senses[0].name() if senses else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", help="list the default rule's misses on this set")
    args = parser.parse_args(argv)
    wn = ensure_wordnet()
    sets = evaluation_sets(wn)
    print(f"{'set':<22} {'classes':>7} {'first sense':>12} {'default':>9}")
    for name, pairs in sets.items():
        old = sum(first_sense(n, wn) == s for n, s in pairs)
        new = sum(default_sense(n, wn) == s for n, s in pairs)
        print(f"{name:<22} {len(pairs):>7} {100 * old / len(pairs):>11.1f}% {100 * new / len(pairs):>8.1f}%")
    pooled = sets["imagenet1k"] + sets["cifar100"]
    print(
        f"{'imagenet1k+cifar100':<22} {len(pooled):>7} "
        f"{100 * sum(first_sense(n, wn) == s for n, s in pooled) / len(pooled):>11.1f}%"
        f" {100 * sum(default_sense(n, wn) == s for n, s in pooled) / len(pooled):>8.1f}%"
    )
    for name, truth in sets.get(args.misses, []):
        got = default_sense(name, wn)
        if got != truth:
            print(f"  {name}: {got} ({wn.synset(got).lexname() if got else '-'}), want {truth} ({wn.synset(truth).lexname()})")


if __name__ == "__main__":
    main()
