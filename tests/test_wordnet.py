"""WordNet layer: offline install, class → synset mapping, candidate nouns (docs/method.md §3, §13)."""
from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata
from pathlib import Path

import nltk
import pytest
from nltk.corpus.reader.wordnet import WordNetCorpusReader

from relaxkd.errors import UserError
from relaxkd.wordnet import (
    all_noun_lemmas,
    builtin_override_datasets,
    candidate_nouns,
    class_synsets,
    ensure_wordnet,
    install,
    lemma_to_text,
    load_overrides,
    neighbourhood_nouns,
    noun_lemma_entries,
)
from relaxkd.wordnet.__main__ import main as wordnet_main
from relaxkd.wordnet.synsets import builtin_override_path, synset_by_name

CIFAR100_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup",
    "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house",
    "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]
CIFAR100_PEOPLE = {"baby", "boy", "girl", "man", "woman"}
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="session")
def wn(tmp_path_factory) -> WordNetCorpusReader:
    # The user's corpus when NLTK has one; otherwise built into a session temp dir, so the test
    # run never writes to ~/nltk_data.
    return ensure_wordnet(tmp_path_factory.mktemp("nltk_data"))


needs_debian_files = pytest.mark.skipif(
    bool(install.missing_debian_files()), reason="Debian wordnet-base/wordnet-sense-index not installed"
)


@pytest.fixture
def no_installed_wordnet(monkeypatch):
    """Hide every installed corpus and reader so ensure_wordnet must take the build path."""
    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.delenv("NLTK_DATA", raising=False)
    monkeypatch.setattr(install, "_READERS", {})


# --- install -------------------------------------------------------------------------------


def test_lexnames_are_the_45_standard_files():
    lines = install.lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3"
    assert lines[3] == "03\tnoun.Tops\t1"
    assert lines[18] == "18\tnoun.person\t1"
    assert lines[44] == "44\tadj.ppl\t3"


def test_version_is_3_0(wn):
    assert wn.get_version() == "3.0"


@needs_debian_files
@pytest.mark.filterwarnings("ignore:The multilingual functions")
def test_build_from_debian_files_into_tmp_dir(tmp_path, monkeypatch, no_installed_wordnet):
    # ensure_wordnet must take the build path; skip its (slow) reader load, done once below.
    monkeypatch.setattr(install, "_load_reader", lambda pointer: pointer)
    pointer = ensure_wordnet(tmp_path)
    root = tmp_path / "corpora" / "wordnet"
    assert pointer.path == str(root)
    for name in [*install.DICT_FILES, "lexnames"]:
        assert (root / name).is_file() and not (root / name).is_symlink()
    assert [p.name for p in (tmp_path / "corpora").iterdir()] == ["wordnet"]  # no staging left

    fresh = WordNetCorpusReader(nltk.data.FileSystemPathPointer(str(root)), None)
    assert fresh.get_version() == "3.0"
    assert fresh.synset_from_pos_and_offset("n", 1440764).name() == "tench.n.01"
    assert fresh.synset("dog.n.01").lexname() == "noun.animal"
    assert fresh.lemma_from_key("dog%1:05:00::").synset().name() == "dog.n.01"  # index.sense


def test_zipped_corpus_as_nltk_downloader_leaves_it_is_found(wn, tmp_path, monkeypatch, no_installed_wordnet):
    corpus = Path(str(wn.root))  # the session's corpus folder
    (tmp_path / "corpora").mkdir()
    shutil.make_archive(str(tmp_path / "corpora" / "wordnet"), "zip", corpus.parent, "wordnet")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    monkeypatch.setattr(install, "_apt_install_debian_packages", lambda: pytest.fail("tried to install WordNet"))
    monkeypatch.setattr(install, "build_wordnet_corpus", lambda d: pytest.fail("tried to build WordNet"))
    reader = ensure_wordnet(tmp_path / "unused")
    assert reader.synset("dog.n.01").lexname() == "noun.animal"


@needs_debian_files
def test_interrupted_build_leaves_no_corpus(tmp_path, monkeypatch):
    copied = []
    real_copyfile = shutil.copyfile

    def failing_copy(src, dst):
        if len(copied) == 3:
            raise KeyboardInterrupt  # a kill half-way through the copy
        copied.append(src)
        return real_copyfile(src, dst)

    monkeypatch.setattr(install.shutil, "copyfile", failing_copy)
    with pytest.raises(KeyboardInterrupt):
        install.build_wordnet_corpus(tmp_path)
    assert list((tmp_path / "corpora").iterdir()) == []


def test_missing_wordnet_names_the_install_commands(tmp_path, monkeypatch, no_installed_wordnet):
    monkeypatch.setattr(install, "missing_debian_files", lambda source_dir=None: ["data.noun"])
    monkeypatch.setattr(install, "_apt_install_debian_packages", lambda: False)
    with pytest.raises(UserError) as err:
        ensure_wordnet(tmp_path)
    message = str(err.value)
    assert "sudo apt-get install wordnet-base wordnet-sense-index" in message
    assert "python -m nltk.downloader wordnet" in message
    assert not (tmp_path / "corpora").exists()


def test_apt_install_retries_after_update(monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd[:2])
        failed = calls.count(["apt-get", "install"]) == 1  # no package lists on a fresh machine
        return subprocess.CompletedProcess(cmd, 100 if failed else 0)

    monkeypatch.setattr(install.os, "geteuid", lambda: 0)
    monkeypatch.setattr(install.shutil, "which", lambda name: "/usr/bin/apt-get")
    monkeypatch.setattr(install.subprocess, "run", fake_run)
    monkeypatch.setattr(install, "missing_debian_files", lambda source_dir=None: [])
    assert install._apt_install_debian_packages()
    assert calls == [["apt-get", "install"], ["apt-get", "update"], ["apt-get", "install"]]

    monkeypatch.setattr(install.os, "geteuid", lambda: 1000)
    assert not install._apt_install_debian_packages()  # never sudo on the user's behalf


def test_module_entry_point_reports_ready(wn, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
    assert wordnet_main(["--data-dir", str(tmp_path)]) == 0
    assert "WordNet 3.0 ready" in capsys.readouterr().out


# --- class → synset ------------------------------------------------------------------------


def test_wnids_map_directly(wn):
    assert class_synsets(["tench", "goldfish"], wnids=["n01440764", "n01443537"], wn=wn) == [
        "tench.n.01",
        "goldfish.n.01",
    ]
    assert class_synsets(["n01440764"], wn=wn) == ["tench.n.01"]  # ImageFolder of wnid folders
    with pytest.raises(UserError, match="n0144"):
        class_synsets(["tench"], wnids=["n0144"], wn=wn)


def test_every_cifar100_class_resolves_to_a_distinct_sensible_synset(wn):
    assert len(CIFAR100_CLASSES) == 100
    names = class_synsets(CIFAR100_CLASSES, dataset="cifar100", wn=wn)
    assert len(set(names)) == 100
    by_class = dict(zip(CIFAR100_CLASSES, names))
    assert by_class["maple_tree"] == "maple.n.02"
    assert by_class["oak_tree"] == "oak.n.02"
    assert by_class["ray"] == "ray.n.07"
    assert by_class["lawn_mower"] == "lawn_mower.n.01"
    assert by_class["sweet_pepper"] == "sweet_pepper.n.02"
    for name, synset in by_class.items():
        lexname = wn.synset(synset).lexname()
        # First senses that are a person (tiger) or a fur (otter) are what the overrides fix.
        assert (lexname == "noun.person") == (name in CIFAR100_PEOPLE), (name, synset)
        assert lexname != "noun.substance", (name, synset)
    # the classes without an override: their first sense, which is also the default pick
    from relaxkd.wordnet.senses import class_senses

    pinned = load_overrides(builtin_override_path("cifar100"))
    for name in CIFAR100_CLASSES:
        if name not in pinned:
            assert by_class[name] == wn.synsets(name, pos="n")[0].name() == class_senses(name, wn)[1][0].name(), name
    # CIFAR-100-LT shares the classes and hence the overrides.
    assert class_synsets(CIFAR100_CLASSES, dataset="cifar100_lt", wn=wn) == names


def test_digits_resolve_to_digit_senses(wn):
    names = class_synsets(DIGITS, dataset="digits", wn=wn)
    assert names[0] == "zero.n.02"
    digit = wn.synset("digit.n.01")
    assert all(wn.synset(name).hypernyms() == [digit] for name in names)


def test_scene_and_utkface_classes_resolve(wn):
    scene = ["buildings", "forest", "glacier", "mountain", "sea", "street"]
    assert class_synsets(scene, dataset="scene", wn=wn) == [
        "building.n.01", "forest.n.02", "glacier.n.01", "mountain.n.01", "sea.n.01", "street.n.01",
    ]
    races = ["White", "Black", "Asian", "Indian", "Others"]
    ages = [f"person aged {low}-{high}" for low, high in [(0, 2), (3, 9), (10, 19), (20, 29)]]
    ages += ["person aged 30-39", "person aged 40-49", "person aged 50-59", "person aged 60-69"]
    ages += ["person aged 70+", "child", "adult", "senior"]
    for classes in (races, ["male", "female"], ages):
        for name in class_synsets(classes, dataset="utkface", wn=wn):
            assert wn.synset(name).lexname() in ("noun.person", "noun.Tops"), name


def test_builtin_override_files_are_valid(wn):
    assert {"cifar100", "digits", "scene", "utkface"} <= set(builtin_override_datasets())
    for dataset in builtin_override_datasets():
        path = builtin_override_path(dataset)
        for synset in load_overrides(path).values():
            assert synset_by_name(synset, wn, str(path)).pos() == "n"


def test_unknown_class_names_the_class_and_the_override(wn):
    with pytest.raises(UserError) as err:
        class_synsets(["apple", "florbnax_widget"], wn=wn)
    message = str(err.value)
    assert "florbnax_widget" in message and "apple" not in message
    assert "data.synset_overrides" in message and "YAML" in message


def test_names_as_people_write_them_reach_the_lemma(wn):
    from relaxkd.wordnet.senses import class_lemma

    nfd_cafe = unicodedata.normalize("NFD", "café")
    written = {"sea-lion": "sea_lion", "Sea Lions": "sea_lion", "  sea   lion ": "sea_lion", "fire.truck": "fire_truck",
               "FireTruck": "fire_truck", "Tigers": "tiger", "T-Shirt": "t-shirt", nfd_cafe: "cafe", "geese": "goose"}
    assert {name: class_lemma(name, wn) for name in written} == written
    assert class_synsets(["sea-lion", "Fire Truck", "Tiger"], wn=wn) == ["sea_lion.n.01", "fire_engine.n.01", "tiger.n.02"]
    assert class_lemma("zorblax", wn) is None


def test_default_sense_is_the_pictured_thing_never_an_instance(wn):
    picked = dict(zip(["crane", "Tiger", "seal", "bat", "jaguar", "kite", "leopard"],
                      class_synsets(["crane", "Tiger", "seal", "bat", "jaguar", "kite", "leopard"], wn=wn)))
    # crane.n.01 is the writer Stephen Crane (an instance), tiger.n.01 a fierce person, seal.n.01 sealing wax
    assert wn.synset("crane.n.01").instance_hypernyms() and picked["crane"] == "crane.n.05"
    assert picked == {"crane": "crane.n.05", "Tiger": "tiger.n.02", "seal": "seal.n.09", "bat": "bat.n.01",
                      "jaguar": "jaguar.n.01", "kite": "kite.n.04", "leopard": "leopard.n.02"}
    # a physical first sense that most of the name's tagged uses mean stays: not the game piece, the coat of paint
    assert class_synsets(["man", "couch", "baby"], wn=wn) == ["man.n.01", "sofa.n.01", "baby.n.01"]
    # a name whose every sense is an instance still resolves; a common-noun sense beats the person
    assert class_synsets(["Eiffel Tower", "Einstein"], wn=wn) == ["eiffel_tower.n.01", "genius.n.01"]
    # the listing keeps every other sense, the writer included
    from relaxkd.wordnet import describe_class_senses

    row = describe_class_senses(["crane"], wn=wn)[0]
    assert row["senses"] == 5 and len(row["alternatives"]) == 4
    assert "crane.n.01" in [name for name, _ in row["alternatives"]] and row["alternatives"][0][0] == "crane.n.04"


def test_every_unknown_name_is_in_one_error_with_pasteable_suggestions(wn, tmp_path):
    with pytest.raises(UserError) as err:
        class_synsets(["zorblax", "cat", "sea-lyon", "elephnat"], wn=wn)
    message = str(err.value)
    assert "\n" not in message and message.startswith("WordNet 3.0 has no noun for 3 classes 'zorblax', 'sea-lyon', 'elephnat';")
    assert "`sea-lyon: sea_lion.n.01`" in message and "`elephnat: elephant.n.01`" in message
    assert "'zorblax': no WordNet noun is spelled like it" in message and "'cat'" not in message
    # the suggested lines, pasted into a file, make the run go on
    lines = {}
    for name, synset in re.findall(r"`([^`:]+): ([a-z_.0-9-]+)`", message.split("Closest nouns: ")[1]):
        lines.setdefault(name, synset)
    path = tmp_path / "synsets.yaml"
    path.write_text("".join(f"{name}: {synset}\n" for name, synset in lines.items()))
    assert class_synsets(["zorblax", "cat", "sea-lyon", "elephnat"], overrides=path, wn=wn) == [
        "object.n.01", "cat.n.01", "sea_lion.n.01", "elephant.n.01"]


def test_class_names_differing_only_by_case_are_refused(wn):
    with pytest.raises(UserError, match=r"classes 'Cat' and 'cat' differ only in case.*merge the two folders or rename one"):
        class_synsets(["Cat", "dog", "cat"], wn=wn)
    with pytest.raises(UserError, match="differ only in case"):
        class_synsets(["sea lion", "sea-lion"], wn=wn)
    # with wnids the names are labels only: ImageNet's two 'crane' classes are fine
    assert class_synsets(["crane", "crane"], wnids=["n02012849", "n03126707"], wn=wn) == ["crane.n.05", "crane.n.04"]


def test_distinct_names_on_one_sense_are_warned(wn):
    from relaxkd.wordnet import describe_class_senses, shared_sense_warning

    assert shared_sense_warning(describe_class_senses(["sofa", "cat"], wn=wn)) is None
    rows = describe_class_senses(["sea lions", "sea-lion", "cat"], wn=wn)
    assert shared_sense_warning(rows).startswith(
        "several classes, one WordNet sense: 'sea lions' and 'sea-lion' are all sea_lion.n.01;")
    overrides = {"cat": "sea_lion.n.01"}
    rows = describe_class_senses(["sea-lion", "cat"], overrides=overrides, wn=wn)
    assert "'sea-lion' and 'cat' are all sea_lion.n.01" in shared_sense_warning(rows)


def test_names_and_overrides_compare_in_nfc(wn):
    nfd, nfc = unicodedata.normalize("NFD", "zébrax"), "zébrax"
    assert nfd != nfc
    assert class_synsets([nfd, "cat"], overrides={nfc: "zebra.n.01"}, wn=wn) == ["zebra.n.01", "cat.n.01"]
    with pytest.raises(UserError) as err:
        class_synsets([nfd, "cat"], wn=wn)
    assert repr(nfc) in str(err.value) and nfd not in str(err.value)
    with pytest.raises(UserError, match="differ only in case"):
        class_synsets([nfd, nfc], wn=wn)


def test_senses_rerank_by_class_images(wn):
    """Embeddings built so that one sense is right: each class's mean image lies on that sense's text."""
    import torch

    from relaxkd.wordnet import describe_class_senses, format_senses
    from relaxkd.wordnet.synsets import rerank_by_images

    rows = describe_class_senses(["crane", "seal", "goldfish"], overrides={"goldfish": "goldfish.n.01"}, wn=wn)
    assert [r["synset"] for r in rows] == ["crane.n.05", "seal.n.09", "goldfish.n.01"]
    texts: dict[str, torch.Tensor] = {}
    gen = torch.Generator().manual_seed(0)

    def embed(sense_texts):
        return torch.stack([texts.setdefault(t, torch.randn(16, generator=gen)) for t in sense_texts])

    from relaxkd.wordnet.senses import sense_text

    right = {"crane": wn.synset("crane.n.04"), "seal": wn.synset("seal.n.09")}  # the machine; the animal
    embed([sense_text(s) for r in rows[:2] for s in [wn.synset(r["synset"])] + [wn.synset(n) for n, _ in r["alternatives"]]])
    means = torch.stack([texts[sense_text(right["crane"])] + 0.1 * torch.randn(16, generator=gen),
                         texts[sense_text(right["seal"])] + 0.1 * torch.randn(16, generator=gen),
                         torch.randn(16, generator=gen)])
    rerank_by_images(rows, means, embed, wn)
    assert [r["synset"] for r in rows] == ["crane.n.04", "seal.n.09", "goldfish.n.01"]
    assert rows[0]["source"] == "images" and rows[0]["runner_up"] != "crane.n.04" and rows[0]["margin"] > 0
    assert rows[2]["source"] == "override" and "runner_up" not in rows[2]  # overrides are never re-picked
    # every alternative is still listed, the previous default among them
    assert sorted(n for n, _ in rows[0]["alternatives"]) == sorted(
        s.name() for s in wn.synsets("crane", pos="n") if s.name() != "crane.n.04")
    line = format_senses(rows)[0]
    assert "closest of 5 noun senses to the class's images; runner-up" in line and f"by {rows[0]['margin']:.3f} cosine" in line


def test_override_file_and_dict(wn, tmp_path):
    path = tmp_path / "overrides.yaml"
    path.write_text("florbnax widget: goldfish.n.01\nray: n01440764\n")
    assert class_synsets(["florbnax_widget", "ray", "apple"], overrides=path, wn=wn) == [
        "goldfish.n.01",
        "tench.n.01",
        "apple.n.01",
    ]
    # The user's choice wins over the built-in overrides and over wnids.
    assert class_synsets(["ray"], overrides={"ray": "beam.n.04"}, dataset="cifar100", wn=wn) == ["beam.n.04"]
    assert class_synsets(["x"], wnids=["n01440764"], overrides={"x": "apple.n.01"}, wn=wn) == ["apple.n.01"]


def test_bad_override_synset_is_named(wn, tmp_path):
    path = tmp_path / "overrides.yaml"
    path.write_text("apple: goldfsh.n.01\n")
    with pytest.raises(UserError, match="goldfsh.n.01"):
        class_synsets(["apple"], overrides=path, wn=wn)
    with pytest.raises(UserError, match="not a noun"):
        class_synsets(["apple"], overrides={"apple": "run.v.01"}, wn=wn)
    path.write_text("- apple\n")
    with pytest.raises(UserError, match="class_name: synset_name"):
        class_synsets(["apple"], overrides=path, wn=wn)
    with pytest.raises(UserError, match="does not exist"):
        class_synsets(["apple"], overrides=tmp_path / "missing.yaml", wn=wn)


# --- candidate nouns -----------------------------------------------------------------------


def test_all_noun_lemmas_counts_and_order(wn):
    entries = noun_lemma_entries(wn)
    assert len(entries) == 146_347
    lemmas = all_noun_lemmas(wn)
    assert len(lemmas) == len(set(lemmas)) == 119_034
    assert lemmas == list(dict.fromkeys(entries))  # first-seen order
    assert lemmas[0] == "entity"
    assert "sea_lion" in lemmas and "sea lion" not in lemmas
    assert all_noun_lemmas() == lemmas  # default reader, cached


@pytest.mark.slow
def test_all_noun_lemmas_recomputed_independently_is_identical(wn):
    entries = [name for synset in wn.all_synsets("n") for name in synset.lemma_names()]
    assert all_noun_lemmas(wn) == list(dict.fromkeys(entries))


def test_lemma_to_text():
    assert lemma_to_text("sea_lion") == "sea lion"
    assert lemma_to_text("Canis_familiaris") == "Canis familiaris"


def test_neighbourhood_has_synonyms_hypernyms_and_hyponyms(wn):
    nouns = neighbourhood_nouns(["dog.n.01"], hypernym_depth=2, wn=wn)
    assert nouns[:3] == ["dog", "domestic_dog", "Canis_familiaris"]
    assert {"canine", "domestic_animal", "carnivore", "animal", "puppy"} <= set(nouns)
    assert len(nouns) == len(set(nouns))
    assert nouns == neighbourhood_nouns([wn.synset("dog.n.01")], hypernym_depth=2, wn=wn)
    shallow = neighbourhood_nouns(["dog.n.01"], hypernym_depth=1, include_hyponyms=False, wn=wn)
    assert "canine" in shallow and "carnivore" not in shallow and "puppy" not in shallow


def test_candidate_nouns_exclude_class_names(wn):
    nouns = candidate_nouns("all", None, ["Sea Lion", "apple"], exclude_class_names=True, wn=wn)
    assert "sea_lion" not in nouns and "apple" not in nouns
    assert len(nouns) == 119_034 - 2
    assert "sea_lion" in candidate_nouns("all", None, ["Sea Lion"], exclude_class_names=False, wn=wn)

    near = candidate_nouns("neighbourhood", ["dog.n.01"], ["dog"], exclude_class_names=True, wn=wn)
    assert "dog" not in near and "domestic_dog" in near and "canine" in near


def test_candidate_nouns_errors(wn):
    with pytest.raises(UserError, match="no candidate nouns"):
        candidate_nouns("neighbourhood", ["tench.n.01"], ["tench", "Tinca tinca"], True, 0, wn=wn)
    with pytest.raises(UserError, match="neighbourhood"):
        candidate_nouns("nearby", ["tench.n.01"], ["tench"], wn=wn)
    with pytest.raises(UserError, match="tench.n.99"):
        candidate_nouns("neighbourhood", ["tench.n.99"], ["tench"], wn=wn)


def test_class_senses_have_glosses_and_guesses_are_flagged(wn, tmp_path):
    from relaxkd.wordnet import ambiguity_warning, describe_class_senses, format_senses

    rows = describe_class_senses(["star", "cross", "goldfish"], wn=wn)
    by_class = {r["class"]: r for r in rows}
    assert by_class["star"]["synset"] == "star.n.01" and "celestial body" in by_class["star"]["gloss"]
    assert by_class["star"]["ambiguous"] and by_class["star"]["senses"] > 1
    assert by_class["cross"]["ambiguous"] and not by_class["goldfish"]["ambiguous"]
    lines = format_senses(rows)
    assert any(line.startswith("star ") and "guess among" in line and "celestial" in line for line in lines)
    assert any("star.n.05" in line and "plane figure" in line for line in lines)  # the sense a shapes dataset wants
    warning = ambiguity_warning(rows, None, tmp_path / "synsets.yaml")
    assert "'star'" in warning and "'cross'" in warning and "goldfish" not in warning
    assert f"data.synset_overrides={tmp_path / 'synsets.yaml'}" in warning
    # chosen senses are not guesses: no warning, and the user's file is named when there is one
    overrides = tmp_path / "mine.yaml"
    overrides.write_text("star: star.n.05\ncross: crisscross.n.01\n")
    chosen = describe_class_senses(["star", "cross"], overrides=overrides, wn=wn)
    assert [r["synset"] for r in chosen] == ["star.n.05", "crisscross.n.01"]
    assert ambiguity_warning(chosen, overrides, tmp_path / "x.yaml") is None
    partly = describe_class_senses(["star", "cross"], overrides={"star": "star.n.05"}, wn=wn)
    assert str(overrides) in ambiguity_warning(partly, overrides, tmp_path / "x.yaml")


def test_demo_digits_senses_are_all_chosen(wn):
    from relaxkd.wordnet import ambiguity_warning, describe_class_senses

    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    rows = describe_class_senses(names, dataset="digits", wn=wn)
    assert ambiguity_warning(rows, None, "x.yaml") is None
    assert rows[0]["synset"] == "zero.n.02" and rows[0]["gloss"]
