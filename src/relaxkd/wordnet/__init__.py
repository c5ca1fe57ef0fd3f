"""WordNet 3.0 layer: install/find NLTK's corpus, map classes to synsets, list candidate nouns."""
from relaxkd.wordnet.candidates import (
    CANDIDATE_KINDS,
    all_noun_lemmas,
    candidate_nouns,
    lemma_to_text,
    neighbourhood_nouns,
    noun_lemma_entries,
)
from relaxkd.wordnet.install import (
    WORDNET_VERSION,
    build_wordnet_corpus,
    default_data_dir,
    ensure_wordnet,
)
from relaxkd.wordnet.synsets import (
    ambiguity_warning,
    builtin_override_datasets,
    class_synsets,
    describe_class_senses,
    format_senses,
    load_overrides,
    resolve_class_synsets,
    shared_sense_warning,
    wnid_to_synset,
)

__all__ = [
    "ambiguity_warning",
    "describe_class_senses",
    "format_senses",
    "CANDIDATE_KINDS",
    "WORDNET_VERSION",
    "all_noun_lemmas",
    "build_wordnet_corpus",
    "builtin_override_datasets",
    "candidate_nouns",
    "class_synsets",
    "default_data_dir",
    "ensure_wordnet",
    "lemma_to_text",
    "load_overrides",
    "neighbourhood_nouns",
    "noun_lemma_entries",
    "resolve_class_synsets",
    "shared_sense_warning",
    "wnid_to_synset",
]
