"""Find or install WordNet 3.0 for NLTK's reader, offline if need be.

Order (docs/method.md §13): an existing NLTK ``corpora/wordnet``; else a corpus built from Debian's
``wordnet-base`` + ``wordnet-sense-index`` files; else, as root with apt, install those packages
and build; else a :class:`UserError` with the command to run.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import nltk
from nltk.corpus.reader.wordnet import WordNetCorpusReader

from relaxkd.errors import UserError

log = logging.getLogger(__name__)

WORDNET_VERSION = "3.0"
WORDNET_RESOURCE = "corpora/wordnet"
DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")
DEBIAN_PACKAGES = ("wordnet-base", "wordnet-sense-index")
DATA_DIR_ENV = "RELAXKD_NLTK_DATA"

# Every dict file NLTK's reader opens, except `lexnames`, which Debian does not ship.
DICT_FILES = tuple(name for name in WordNetCorpusReader._FILES if name != "lexnames")

# The 45 standard lexicographer files of WordNet 3.0 (lexnames(5WN)): name and pos number.
LEXNAMES = (
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1), ("noun.act", 1),
    ("noun.animal", 1), ("noun.artifact", 1), ("noun.attribute", 1), ("noun.body", 1),
    ("noun.cognition", 1), ("noun.communication", 1), ("noun.event", 1), ("noun.feeling", 1),
    ("noun.food", 1), ("noun.group", 1), ("noun.location", 1), ("noun.motive", 1),
    ("noun.object", 1), ("noun.person", 1), ("noun.phenomenon", 1), ("noun.plant", 1),
    ("noun.possession", 1), ("noun.process", 1), ("noun.quantity", 1), ("noun.relation", 1),
    ("noun.shape", 1), ("noun.state", 1), ("noun.substance", 1), ("noun.time", 1),
    ("verb.body", 2), ("verb.change", 2), ("verb.cognition", 2), ("verb.communication", 2),
    ("verb.competition", 2), ("verb.consumption", 2), ("verb.contact", 2), ("verb.creation", 2),
    ("verb.emotion", 2), ("verb.motion", 2), ("verb.perception", 2), ("verb.possession", 2),
    ("verb.social", 2), ("verb.stative", 2), ("verb.weather", 2), ("adj.ppl", 3),
)

INSTALL_HINT = (
    "install it with `sudo apt-get install wordnet-base wordnet-sense-index` (offline-capable, "
    "then rerun) or `python -m nltk.downloader wordnet` (needs internet)"
)


def default_data_dir() -> Path:
    """Where a built corpus goes: ``$RELAXKD_NLTK_DATA``, else ``~/nltk_data`` (NLTK's default)."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path("~/nltk_data").expanduser()


def lexnames_text() -> str:
    """Contents of the `lexnames` file: ``NN<TAB>name<TAB>pos-number`` per line."""
    return "".join(f"{i:02d}\t{name}\t{pos}\n" for i, (name, pos) in enumerate(LEXNAMES))


def missing_debian_files(source_dir: Path = DEBIAN_WORDNET_DIR) -> list[str]:
    return [name for name in DICT_FILES if not (Path(source_dir) / name).is_file()]


def build_wordnet_corpus(data_dir: Path, source_dir: Path = DEBIAN_WORDNET_DIR) -> Path:
    """Build ``<data_dir>/corpora/wordnet`` from Debian's dict files; return that directory.

    Files are copied (NLTK refuses to read through links leaving its data roots) into a
    temporary sibling directory that is renamed into place, so an interrupted build leaves no
    half corpus under the real name. An existing corpus is left as it is.
    """
    source_dir = Path(source_dir)
    missing = missing_debian_files(source_dir)
    if missing:
        raise UserError(
            f"WordNet dict files missing from {source_dir}: {', '.join(missing)}; {INSTALL_HINT}"
        )
    corpora = Path(data_dir).expanduser() / "corpora"
    target = corpora / "wordnet"
    if target.exists():
        return target
    # Explicit modes: NLTK refuses data that other accounts could have written (umask 002).
    corpora.mkdir(parents=True, exist_ok=True, mode=0o755)
    staging = Path(tempfile.mkdtemp(prefix=".wordnet-partial-", dir=corpora))
    try:
        for name in DICT_FILES:
            shutil.copyfile(source_dir / name, staging / name)
            os.chmod(staging / name, 0o644)
        (staging / "lexnames").write_text(lexnames_text(), encoding="utf-8")
        os.chmod(staging / "lexnames", 0o644)
        os.chmod(staging, 0o755)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished the same build first; its corpus is as good as ours.
            if not target.is_dir():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("built WordNet %s corpus at %s from %s", WORDNET_VERSION, target, source_dir)
    return target


def _apt_install_debian_packages() -> bool:
    """As root with apt-get, install the Debian WordNet packages; True when that worked."""
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", *DEBIAN_PACKAGES]
    log.warning("WordNet not found; running: %s", " ".join(install))
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        # A fresh container often has no package lists yet.
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            return False
    return not missing_debian_files()


def _add_to_nltk_path(data_dir: Path) -> None:
    entry = str(Path(data_dir).expanduser())
    if entry not in [str(p) for p in nltk.data.path]:
        nltk.data.path.append(entry)


def _find_nltk_wordnet():
    # a folder, or the zip NLTK's downloader may leave (find() looks inside zips only this way)
    for resource in (WORDNET_RESOURCE, f"{WORDNET_RESOURCE}.zip/wordnet/"):
        try:
            return nltk.data.find(resource)
        except LookupError:
            pass
    return None


_READERS: dict[str, WordNetCorpusReader] = {}


def _open_reader(pointer) -> WordNetCorpusReader:
    """One reader per corpus root (a directory or zip pointer): loading indexes takes seconds."""
    key = repr(pointer)
    if key not in _READERS:
        _READERS[key] = _load_reader(pointer)
    return _READERS[key]


def _load_reader(pointer) -> WordNetCorpusReader:
    root = str(pointer)
    with warnings.catch_warnings():
        # No Open Multilingual WordNet is needed; only English lemmas are used.
        warnings.filterwarnings("ignore", message="The multilingual functions")
        try:
            reader = WordNetCorpusReader(pointer, None)
        except (OSError, ValueError, AssertionError) as exc:
            raise UserError(
                f"cannot read the WordNet corpus at {root} ({exc}); delete that directory and "
                f"rerun `python -m relaxkd.wordnet`, or {INSTALL_HINT}"
            ) from None
    version = reader.get_version()
    if version != WORDNET_VERSION:
        raise UserError(
            f"the WordNet corpus at {root} is version {version}, relaxkd needs "
            f"{WORDNET_VERSION} (its lemma counts are part of the method); replace it: "
            f"{INSTALL_HINT}"
        )
    return reader


def ensure_wordnet(data_dir: Path | None = None) -> WordNetCorpusReader:
    """Return NLTK's reader over WordNet 3.0, installing the corpus first if NLTK has none.

    ``data_dir`` (default :func:`default_data_dir`) is where a corpus is built; it is added to
    ``nltk.data.path`` so NLTK finds the result.
    """
    data_dir = (Path(data_dir) if data_dir is not None else default_data_dir()).expanduser()
    data_dir = data_dir.absolute()
    _add_to_nltk_path(data_dir)
    found = _find_nltk_wordnet()
    if found is None:
        if missing_debian_files() and not _apt_install_debian_packages():
            raise UserError(f"WordNet {WORDNET_VERSION} is not installed for NLTK; {INSTALL_HINT}")
        try:
            build_wordnet_corpus(data_dir)
        except OSError as exc:
            raise UserError(
                f"cannot build WordNet under {data_dir} ({exc}); set {DATA_DIR_ENV} to a "
                "writable directory"
            ) from None
        found = _find_nltk_wordnet()
        if found is None:
            raise UserError(
                f"built WordNet at {data_dir / WORDNET_RESOURCE} but NLTK cannot find it; "
                f"check that {data_dir} is readable and private to you (chmod go-w)"
            )
    return _open_reader(found)
