"""Prompt templates for word embeddings (docs/method.md §2)."""
from __future__ import annotations

from relaxkd.errors import UserError

# The seven templates TAC and the authors' code use, in that order.
TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


#: how a word's template embeddings become one (paper Alg. 1 line 10): averaged, then normalised;
#: and since issue 22, each prompt through the text tower at its batch's token length rather than 77
#: (clip/text_length.py: equal up to float rounding, not bit for bit). Part of every artifact key
#: holding word embeddings, so embeddings made another way (each template normalised first, relaxkd
#: before issue 13; at the full context, before issue 22) are never reused.
WORD_EMBEDDING = "mean-then-normalise; prompt-length text"


def word_to_text(word: str) -> str:
    """The text a word stands for in a prompt: WordNet/class-name underscores become spaces."""
    return word.replace("_", " ")


def check_templates(templates: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate prompt templates: at least one, each with exactly one ``{}`` slot."""
    templates = tuple(templates)
    if not templates:
        raise UserError("no prompt templates given; give at least one template containing '{}'")
    for template in templates:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise UserError(
                f"prompt template {template!r} must contain exactly one '{{}}' where the word goes"
            )
    return templates
