"""unstructured's element classifier reading spaCy results computed in batches: the same
elements as its own one-text-at-a-time path, with part-of-speech tagging only where the
classifier reads it."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from lorechat_pipeline.core.parsing import offline_nlp
from lorechat_pipeline.core.parsing.offline_nlp import (
    _pos_tag,
    batched_nlp,
    install_offline_nlp,
)
from lorechat_pipeline.core.parsing.partition import _text_paragraphs

DOCUMENT = """\
Installing the Command Line Tools

The installer checks your system first. It then copies the files into place, and
it asks before replacing anything you changed. Nothing is removed without a prompt.

Run the installer

CHAPTER TWO: WHAT CAN GO WRONG

WARNING. DO NOT UNPLUG THE DEVICE.

Configuration files live under the home folder.

1. Open a terminal.

- Copy the example file
- Edit it to taste

>>> import installer
>>> installer.run(dry_run=True)

Questions? Write to us.

help@example.org

Doylestown, PA 18901

2024

The tool keeps a log. Each run appends to it, so the log grows over time; rotate it
monthly. Older logs are compressed.
"""


def clear_unstructured_caches() -> None:
    from unstructured.nlp import tokenize

    for cached in (tokenize._tokenize_for_cache, tokenize.word_tokenize, tokenize._process_cached):
        cached.cache_clear()


@pytest.fixture
def fresh_caches() -> Iterator[None]:
    install_offline_nlp()
    clear_unstructured_caches()
    yield
    clear_unstructured_caches()


def elements(text: str) -> list[tuple[str, str]]:
    from unstructured.partition.text import partition_text

    return [(type(e).__name__, e.text) for e in partition_text(text=text)]


@pytest.mark.usefixtures("fresh_caches")
def test_batched_classification_equals_unstructureds_own() -> None:
    with batched_nlp(_text_paragraphs(DOCUMENT.encode())):
        batched = elements(DOCUMENT)
    clear_unstructured_caches()
    alone = elements(DOCUMENT)
    assert batched == alone
    kinds = {kind for kind, _ in alone}
    # The sample reaches every branch that matters here, tagged or not.
    assert {"Title", "NarrativeText", "ListItem", "EmailAddress", "Address"} <= kinds


@pytest.mark.usefixtures("fresh_caches")
def test_only_what_the_classifier_reads_is_computed() -> None:
    texts = _text_paragraphs(DOCUMENT.encode())
    with batched_nlp(texts):
        prefetcher = offline_nlp._batch.prefetcher
        docs = {text: prefetcher(text) for text in texts[:1]} | prefetcher._docs
    heading = "Installing the Command Line Tools"
    several_sentences = next(t for t in texts if t.startswith("The installer checks"))
    one_sentence = "Configuration files live under the home folder."
    # Mostly capitalised: "one sentence at most?" decides, and no verb is looked for.
    assert docs[heading].has_annotation("SENT_START")
    assert not docs[heading].has_annotation("TAG")
    # A long paragraph in lower case is narrative on its tokens alone.
    assert not docs[several_sentences].has_annotation("SENT_START")
    assert not docs[several_sentences].has_annotation("TAG")
    # Short enough to be a title: its sentences and then its verbs are read.
    assert docs[one_sentence].has_annotation("SENT_START")
    assert docs[one_sentence].has_annotation("TAG")


@pytest.mark.usefixtures("fresh_caches")
def test_tags_read_from_an_untagged_document_are_computed_then() -> None:
    from unstructured.nlp import tokenize

    text = "The tool keeps a log. Each run appends to it."
    expected = [(token.text, token.tag_) for token in tokenize._get_nlp()(text)]
    with batched_nlp([text]):
        assert not tokenize._process(text).has_annotation("TAG")
        assert _pos_tag(text) == expected
    assert any(tag.startswith("VB") for _, tag in expected)


@pytest.mark.usefixtures("fresh_caches")
def test_a_text_that_cannot_be_a_title_is_narrative_without_being_tagged() -> None:
    from unstructured.nlp import tokenize

    too_long_for_a_title = (
        "Tables of contents, indexes, glossaries and appendices for every module of the library"
    )
    short_without_a_verb = "Configuration files and folders"
    nlp = tokenize._get_nlp()
    for text in (too_long_for_a_title, short_without_a_verb):
        assert not any(token.tag_.startswith("VB") for token in nlp(text))
    clear_unstructured_caches()

    texts = [too_long_for_a_title, short_without_a_verb]
    with batched_nlp(texts):
        classified = elements("\n\n".join(texts))
        assert not tokenize._process(too_long_for_a_title).has_annotation("TAG")
        assert tokenize._process(short_without_a_verb).has_annotation("TAG")
    # Untagged, the long one is narrative; the short one is still tagged, and its missing verb
    # still makes it a title, where chunks break.
    assert classified == [
        ("NarrativeText", too_long_for_a_title),
        ("Title", short_without_a_verb),
    ]


TRICKY_TEXTS = [
    "",
    "2024",
    "A",
    "ITEM 1A. RISK FACTORS",
    "WARNING. DO NOT UNPLUG THE DEVICE. EVER.",
    "To My Dearest Friends,",
    "Run it now. Stop it then.",
    "Financial Statements (Unaudited)",
    "The Quick Brown Fox. The Lazy Dog Sleeps Here.",
    "----------- BREAK -----------",
    "def main(argv: list[str]) -> int:",
    "PyObject *PyList_New(Py_ssize_t len)",
    "See the Python Package Index for Third Party Modules and Tools.",
]


def corpus_texts() -> list[str]:
    """Real prose, headings, tables and code: this repository's own documentation."""
    repository = Path(__file__).resolve().parents[2]
    texts = list(TRICKY_TEXTS)
    for document in [repository / "README.md", *sorted((repository / "docs").glob("*.md"))]:
        data = document.read_bytes()
        texts += _text_paragraphs(data) + data.decode().splitlines()
    return list(dict.fromkeys(texts))


@pytest.mark.usefixtures("fresh_caches")
def test_reordered_checks_answer_as_unstructureds_own() -> None:
    texts = corpus_texts()
    assert len(texts) > 1000
    assert offline_nlp._narrative_check is not None
    assert offline_nlp._cap_ratio_check is not None
    for text in texts:
        assert offline_nlp._exceeds_cap_ratio(text) == offline_nlp._cap_ratio_check(text), text
        expected = offline_nlp._narrative_check(text)
        assert offline_nlp._is_possible_narrative_text(text) == expected, text
    narrative = sum(map(offline_nlp._is_possible_narrative_text, texts))
    assert 0 < narrative < len(texts)  # both answers occur


@pytest.mark.usefixtures("fresh_caches")
def test_every_classifier_imported_reads_the_reordered_check() -> None:
    from unstructured.partition import docx, text, text_type
    from unstructured.partition.html import parser

    offline_nlp.patch_classifiers()
    for module in (text_type, text):
        assert module.is_possible_narrative_text is offline_nlp._is_possible_narrative_text
    for module in (parser, docx):
        assert module.is_possible_narrative_text is offline_nlp.is_narrative_markup_text


@pytest.mark.parametrize(
    ("text", "narrative"),
    [
        ("", False),
        ("2024", False),
        ("See also", False),
        ("Return Value", False),
        ("----------- BREAK -----------", False),
        ("WARNING. DO NOT UNPLUG.", False),  # capitals: a heading set in a paragraph
        ("New in version 3.2.", True),  # ends like a sentence
        ("Questions? Write to us.", True),
        ("The installer checks your system first and then copies the files", True),
    ],
)
def test_markup_text_is_narrative_by_its_length_and_ending(text: str, narrative: bool) -> None:
    assert offline_nlp.is_narrative_markup_text(text) is narrative


@pytest.mark.usefixtures("fresh_caches")
def test_markup_labels_stay_close_to_unstructureds_own() -> None:
    """Both are heuristics, and only a label rides on them; a rule that drifted far from
    unstructured's (say, everything narrative: 66% here) fails."""
    texts = corpus_texts()
    assert offline_nlp._narrative_check is not None
    agreeing = sum(
        offline_nlp.is_narrative_markup_text(text) == offline_nlp._narrative_check(text)
        for text in texts
    )
    assert agreeing / len(texts) > 0.88


HTML_PAGE = b"""<html><body>
<h1>Installing the Command Line Tools</h1>
<p>The installer checks your system first. It then copies the files into place.</p>
<div>See also</div>
<h2>Run the installer</h2>
<p>Questions? Write to us.</p>
</body></html>"""


@pytest.mark.usefixtures("fresh_caches")
def test_html_is_labelled_without_spacy(monkeypatch: pytest.MonkeyPatch) -> None:
    from unstructured.nlp import tokenize
    from unstructured.partition.html import partition_html

    install_offline_nlp()  # as parse_and_chunk does, after the partitioner's import
    asked: list[str] = []
    process = tokenize._process
    monkeypatch.setattr(tokenize, "_process", lambda text: asked.append(text) or process(text))

    labelled = [(type(e).__name__, e.text) for e in partition_html(text=HTML_PAGE.decode())]

    assert labelled == [
        ("Title", "Installing the Command Line Tools"),
        (
            "NarrativeText",
            "The installer checks your system first. It then copies the files into place.",
        ),
        ("Text", "See also"),
        ("Title", "Run the installer"),
        ("NarrativeText", "Questions? Write to us."),
    ]
    assert asked == []
