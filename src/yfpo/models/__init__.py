"""Models: loading (any HF causal LM, the embedded default), arch (where a family keeps its parts), tiny (tests)."""

from yfpo.models.loading import DEFAULT_MODEL, load_model, load_tokenizer, prepare_embedded, resolve_model_path

__all__ = ["DEFAULT_MODEL", "load_model", "load_tokenizer", "prepare_embedded", "resolve_model_path"]
