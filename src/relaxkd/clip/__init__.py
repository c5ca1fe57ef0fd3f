"""open_clip encoder layer: model + weights loading, image/text embedding, prompt templates."""
from relaxkd.clip.encoder import ClipEncoder
from relaxkd.clip.loading import TINY_MODEL, load_clip, register_tiny_model
from relaxkd.clip.prompt_tokens import PromptTokenizer
from relaxkd.clip.templates import TEMPLATES, check_templates, word_to_text

register_tiny_model()

__all__ = [
    "TEMPLATES",
    "TINY_MODEL",
    "ClipEncoder",
    "PromptTokenizer",
    "check_templates",
    "load_clip",
    "register_tiny_model",
    "word_to_text",
]
