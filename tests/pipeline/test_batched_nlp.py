"""unstructured's element classifier reading spaCy results computed in batches: the same
elements as its own one-text-at-a-time path, with part-of-speech tagging only where the
classifier reads it."""

import os
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

About these files

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
        assert prefetcher.classified(texts[0]) is not None
        docs = dict(prefetcher._docs)
        elements_made_ahead = set(prefetcher._elements)
    heading = "Installing the Command Line Tools"
    several_sentences = next(t for t in texts if t.startswith("The installer checks"))
    one_sentence = "Configuration files live under the home folder."
    # Mostly capitalised: "one sentence at most?" decides, and no verb is looked for.
    assert docs[heading].has_annotation("SENT_START")
    assert not docs[heading].has_annotation("TAG")
    # A long paragraph in lower case is narrative without spaCy: not even tokenized.
    assert several_sentences in docs
    assert docs[several_sentences] is None
    # Short enough to be a title: its sentences and then its verbs are read.
    assert docs[one_sentence].has_annotation("SENT_START")
    assert docs[one_sentence].has_annotation("TAG")
    # Too short for two sentences of five words, so its verbs first; without one, its
    # sentences of three words: both computed in the batch, and the element made ahead.
    no_verb = "About these files"
    assert docs[no_verb].has_annotation("TAG")
    assert docs[no_verb].has_annotation("SENT_START")
    assert no_verb in elements_made_ahead


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
def test_sentences_are_counted_as_unstructured_counts_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unstructureds = offline_nlp._unstructured_sentence_count
    assert unstructureds is not None
    segmented: list[str] = []
    monkeypatch.setattr(
        offline_nlp,
        "_unstructured_sentence_count",
        lambda text, min_length=None: segmented.append(text) or unstructureds(text, min_length),
    )
    texts = corpus_texts()
    for text in texts:
        for min_length in (None, 3, 5):
            expected = unstructureds(text, min_length)
            assert offline_nlp._sentence_count(text, min_length) == expected, (text, min_length)
    # The classifier counts sentences of five words in texts short enough to be titles.
    could_be_titles = [text for text in texts if 0 < len(text.split()) <= 12]
    segmented.clear()
    for text in could_be_titles:
        offline_nlp._sentence_count(text, 5)
    # Fewer than five words: no sentence to count (a fifth of these; most of a .rst source's).
    assert len(segmented) < 0.9 * len(could_be_titles)


CAPITALS_TRAPS = [
    "Cannot Gonna",  # one run of letters, two tokens of letters
    "Do Don't Does",  # "n't" is not letters
    "foo\u200bBar Baz",  # a zero-width space splits no run and no token
    "Ǆemal Ǉubljana",  # title-case letters
    "e.g. The U.S.A. Act",
    "ALL CAPS here and there",
    "x" * 10 + " Y" * 9,
]


@pytest.mark.usefixtures("fresh_caches")
def test_the_capitals_bound_never_hides_a_capitalised_text() -> None:
    """`_too_few_capitals` decides "not mostly capitalised" without tokens; whenever it does,
    the ratio over spaCy's tokens of letters must agree."""
    from unstructured.partition import text_type

    decided = 0
    for text in CAPITALS_TRAPS + corpus_texts():
        for threshold in (0.3, 0.5):
            if offline_nlp._too_few_capitals(text, threshold):
                decided += 1
                words = [w for w in text_type.word_tokenize(text) if w.isalpha()]
                assert not offline_nlp._mostly_capitalised(words, threshold), (text, threshold)
    assert decided > 500


def test_a_metadata_template_copy_is_a_copy() -> None:
    from unstructured.documents.elements import ElementMetadata

    template = ElementMetadata(filename="a.txt", page_number=1)
    template.languages = ["eng"]
    deep = offline_nlp._TemplateCopying.deepcopy(template)
    deep.languages.append("deu")
    assert template.languages == ["eng"]  # a list held is copied too
    template.languages = None
    shallow = offline_nlp._TemplateCopying.deepcopy(template)
    shallow.page_number = 2
    assert (template.filename, template.page_number) == ("a.txt", 1)
    assert shallow.filename == "a.txt"


def test_text_documents_are_classified_as_unstructured_alone_classifies_them() -> None:
    """Every stand-in together (reordered checks, counting bounds, batches, classifying once,
    template copies) against unstructured 0.27's own `partition_text` in a fresh interpreter
    where only the spaCy model's loading is redirected, on this repository's documentation.
    One difference is ours by design (parser version 2): a text that cannot be a title and
    fails only unstructured's verb check is NarrativeText here, Text there."""
    import json
    import subprocess
    import sys

    from unstructured.partition.text import partition_text

    repository = Path(__file__).resolve().parents[2]
    documents = [repository / "README.md", *sorted((repository / "docs").glob("*.md"))]
    alone = subprocess.run(
        [sys.executable, "-c", UNPATCHED_PARTITION, *map(str, documents)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"},
    )
    expected = [
        [
            ["NarrativeText" if label == "Text" and narrative_but_for_a_verb else label, text]
            for label, text, narrative_but_for_a_verb in elements
        ]
        for elements in json.loads(alone.stdout)
    ]
    install_offline_nlp()
    ours = []
    for document in documents:
        data = document.read_bytes()
        with batched_nlp(_text_paragraphs(data)):
            ours.append([[type(e).__name__, e.text] for e in partition_text(text=data.decode())])
    assert ours == expected
    labels = [label for elements in ours for label, _ in elements]
    assert {"Title", "NarrativeText", "ListItem", "Text"} <= set(labels)
    assert len(labels) > 300


UNPATCHED_PARTITION = """
import json, sys
from lorechat_pipeline.core.parsing.offline_nlp import load_spacy_model
from unstructured.nlp import tokenize
tokenize._load_spacy_model = load_spacy_model
from unstructured.partition.text import partition_text
from unstructured.partition import text_type as t

def narrative_but_for_a_verb(text):
    return not (
        t.is_possible_title(text) or t.exceeds_cap_ratio(text) or t.under_non_alpha_ratio(text)
    )

print(json.dumps([
    [
        [type(e).__name__, e.text, narrative_but_for_a_verb(e.text)]
        for e in partition_text(text=open(p, encoding="utf-8").read())
    ]
    for p in sys.argv[1:]
]))
"""


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
