"""The ONNX query encoder gives the ingestion model's vectors (cosine ≥ 0.9999) without torch, is
exported once and reused, and an export of another model is refused."""

import json
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from lorechat_pipeline.core import onnx_embedding
from lorechat_pipeline.core.embedding import Embedder
from lorechat_pipeline.core.onnx_embedding import OnnxEmbedder, OnnxExportError, OnnxExportInfo
from serving.query_encoder import QueryBatcher, batched, build_query_embedder, export_folder
from serving.settings import QueryEncoder, ServingSettings

TEXTS = [
    "How do I bleed a radiator?",
    "x",
    "",
    "Ünïcödé, テキスト and emoji 🚀 in one query",
    # Longer than the model's 256 tokens: both encoders must truncate at the same place.
    "Solar panels convert sunlight into electricity using photovoltaic cells. " * 60,
    "The boiler pressure should stay between one and two bar.\n\nCheck the flue.",
]


def test_onnx_vectors_match_the_ingestion_model(query_encoder_dir: Path, embedder: Any) -> None:
    onnx = OnnxEmbedder(query_encoder_dir)
    assert onnx.model_id == embedder.model_id
    assert onnx.dimension == embedder.dimension
    exported, reference = onnx.embed_documents(TEXTS), embedder.embed_documents(TEXTS)
    assert exported.shape == reference.shape == (len(TEXTS), 384)
    assert exported.dtype == np.float32
    cosines = (exported * reference).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines
    np.testing.assert_allclose(np.linalg.norm(exported, axis=1), 1.0, atol=1e-5)
    # Batching and single queries agree (padding must not leak into the mean).
    single = np.stack([onnx.embed_query(text) for text in TEXTS])
    np.testing.assert_allclose(single, exported, atol=1e-5)


def test_the_export_runs_every_layer_as_fused_operators(query_encoder_dir: Path) -> None:
    info = OnnxExportInfo.read(query_encoder_dir)
    assert info.fused_attention_layers == 6  # all-MiniLM-L6-v2 has six layers
    operators = {node.op_type for node in onnx.load(query_encoder_dir / "model.onnx").graph.node}
    assert {"Attention", "EmbedLayerNormalization", "SkipLayerNormalization"} <= operators
    assert not (query_encoder_dir / "unfused-model.onnx").exists()


def test_a_fused_graph_that_computes_otherwise_is_not_shipped(
    tmp_path: Path, embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No fused graph is ever that close to the unfused one: the export must keep the unfused.
    monkeypatch.setattr(onnx_embedding, "FUSION_TOLERANCE", -1.0)
    info = onnx_embedding.export_query_encoder(tmp_path)
    assert info.fused_attention_layers == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "export.json",
        "model.onnx",
        "tokenizer.json",
    ]
    operators = {node.op_type for node in onnx.load(tmp_path / "model.onnx").graph.node}
    assert "Attention" not in operators
    vectors = OnnxEmbedder(tmp_path).embed_documents(TEXTS)
    assert (vectors * embedder.embed_documents(TEXTS)).sum(axis=1).min() >= 0.9999


def test_the_default_exports_once_into_the_home_and_reuses_it(
    tmp_path: Path, query_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ServingSettings(home=tmp_path)
    folder = export_folder(settings, "sentence-transformers/all-MiniLM-L6-v2")
    assert folder.is_relative_to(tmp_path)
    assert settings.query_encoder is QueryEncoder.ONNX
    first = build_query_embedder(settings)
    assert isinstance(first, OnnxEmbedder)
    assert first.folder == folder
    graph = folder / "model.onnx"
    stamp = graph.stat().st_mtime_ns
    # Reused without torch: a later start (or an image without torch) only reads the export.
    monkeypatch.setitem(sys.modules, "torch", None)
    second = build_query_embedder(settings)
    assert isinstance(second, OnnxEmbedder)
    assert graph.stat().st_mtime_ns == stamp
    np.testing.assert_allclose(second.embed_query("tea"), first.embed_query("tea"))


def test_an_export_of_another_model_is_refused(tmp_path: Path, query_encoder_dir: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    for name in ("model.onnx", "tokenizer.json"):
        (other / name).symlink_to(query_encoder_dir / name)
    info = json.loads((query_encoder_dir / "export.json").read_text())
    (other / "export.json").write_text(json.dumps({**info, "model_id": "someone/else"}))
    with pytest.raises(OnnxExportError, match=r"someone/else.*LORECHAT_QUERY_ENCODER_DIR"):
        build_query_embedder(ServingSettings(home=tmp_path, query_encoder_dir=other))


def test_without_torch_or_an_export_the_error_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(OnnxExportError, match="LORECHAT_QUERY_ENCODER_DIR"):
        build_query_embedder(ServingSettings(home=tmp_path))
    assert build_query_embedder(
        ServingSettings(home=tmp_path, query_encoder=QueryEncoder.TORCH)
    ).model_id == ("sentence-transformers/all-MiniLM-L6-v2")


class CountingEmbedder(Embedder):
    """Records the batches it is given; each encode waits until the test lets it go."""

    model_id, dimension = "counting", 3

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.gate.wait(30)
        if "fail" in texts:
            raise ValueError("this batch cannot be encoded")
        self.batches.append(list(texts))
        return np.array([[len(text), 1.0, 0.0] for text in texts], dtype=np.float32)


def test_queries_waiting_for_a_busy_encoder_are_encoded_in_one_run() -> None:
    inner = CountingEmbedder()
    batcher = QueryBatcher(inner, encoders=1, max_batch=4)
    try:
        with ThreadPoolExecutor(8) as pool:
            first = pool.submit(batcher.embed_query, "a")
            time.sleep(0.2)  # the encoder has taken "a" and is busy with it
            rest = [pool.submit(batcher.embed_query, "b" * n) for n in range(2, 8)]
            time.sleep(0.2)
            inner.gate.set()
            vectors = [first.result(30), *(future.result(30) for future in rest)]
        # Each caller gets its own query's vector back, whichever batch it went in.
        assert [int(vector[0]) for vector in vectors] == [1, 2, 3, 4, 5, 6, 7]
        assert inner.batches[0] == ["a"]  # an idle encoder did not wait for company
        assert [len(batch) for batch in inner.batches[1:]] == [4, 2]  # the waiting ones, together
    finally:
        batcher.close()


def test_a_failed_batch_fails_each_of_its_queries_and_not_the_next() -> None:
    inner = CountingEmbedder()
    inner.gate.set()
    batcher = QueryBatcher(inner, encoders=1)
    try:
        with pytest.raises(ValueError, match="cannot be encoded"):
            batcher.embed_query("fail")
        assert batcher.embed_query("next")[0] == 4
    finally:
        batcher.close()


def test_work_queued_after_a_query_runs_on_the_encoder_thread_with_its_vector() -> None:
    inner = CountingEmbedder()
    inner.gate.set()
    batcher = QueryBatcher(inner, encoders=1)
    try:
        ran_on: list[str] = []

        def then(vector: np.ndarray) -> float:
            ran_on.append(threading.current_thread().name)
            return float(vector[0]) * 10

        assert batcher.submit_then("abc", then).result(30) == 30.0
        assert ran_on == ["query-encoder-0"]  # not the caller's (the event loop's) thread
        failing = batcher.submit_then("fail", then)
        with pytest.raises(ValueError, match="cannot be encoded"):
            failing.result(30)
        broken = batcher.submit_then("ok", lambda vector: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            broken.result(30)
    finally:
        batcher.close()


def test_work_after_a_query_whose_caller_went_away_is_skipped() -> None:
    inner = CountingEmbedder()
    batcher = QueryBatcher(inner, encoders=1)
    try:
        ran: list[np.ndarray] = []
        abandoned = batcher.submit_then("gone", ran.append)
        assert abandoned.cancel()  # the client disconnected while the encoder was busy
        inner.gate.set()
        assert batcher.submit_then("next", lambda vector: int(vector[0])).result(30) == 4
        assert ran == []
        # Encoded (it was queued), but nothing ran after it.
        assert any("gone" in batch for batch in inner.batches)
    finally:
        batcher.close()


def test_a_lone_query_goes_to_the_session_over_every_core() -> None:
    shared, solo = CountingEmbedder(), CountingEmbedder()
    solo.gate.set()
    batcher = QueryBatcher(shared, encoders=2, solo=solo)
    try:
        assert batcher.embed_query("alone")[0] == 5
        assert solo.batches == [["alone"]]
        with ThreadPoolExecutor(4) as pool:
            # The solo session is busy with the first; the second finds an encoder busy and
            # takes a one-core session, and so does everything behind it.
            solo.gate.clear()
            first = pool.submit(batcher.embed_query, "one")
            time.sleep(0.2)
            second = pool.submit(batcher.embed_query, "two")
            time.sleep(0.2)
            shared.gate.set()
            solo.gate.set()
            assert first.result(30)[0] == 3
            assert second.result(30)[0] == 3
        assert solo.batches == [["alone"], ["one"]]
        assert shared.batches == [["two"]]
    finally:
        batcher.close()


def test_the_onnx_encoder_gets_a_solo_session_over_the_usable_cores(
    query_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("serving.query_encoder.usable_cores", lambda: 2)
    batcher = batched(OnnxEmbedder(query_encoder_dir, threads=1))
    try:
        assert isinstance(batcher.solo, OnnxEmbedder)
        assert batcher.solo.threads == 2
        assert not batcher.solo.spinning
        alone = batcher.embed_query("how do I bleed a radiator")
        one_core = batcher.embedder.embed_query("how do I bleed a radiator")
        assert float(alone @ one_core) >= 0.99999
    finally:
        batcher.close()
    monkeypatch.setattr("serving.query_encoder.usable_cores", lambda: 1)
    single = batched(OnnxEmbedder(query_encoder_dir, threads=1))
    assert single.solo is None  # one core: nothing to spread over
    single.close()


def test_batched_queries_give_the_vectors_they_give_alone(query_encoder_dir: Path) -> None:
    onnx = OnnxEmbedder(query_encoder_dir)
    queries = ["boiler pressure", "how do I bleed a radiator before winter", "tea", "solar"]
    alone = np.stack([onnx.embed_query(query) for query in queries])
    together = onnx.embed_documents(queries)  # one run, padded to the longest
    cosine = np.sum(alone * together, axis=1)
    assert cosine.min() >= 0.99999
