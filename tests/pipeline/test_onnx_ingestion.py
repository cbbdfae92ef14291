"""Ingestion embeds with OpenVINO (bfloat16 where the CPU has it) or onnxruntime on an ONNX
export of the packaged model: the vectors of torch (cosine ≥ 0.9999, in the order given, long
chunks truncated alike), the same model id in the index, an export made once offline and reused,
a partial or corrupt export rebuilt, reduced precision kept only within the parity bound."""

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lorechat_pipeline.core import onnx_embedding, openvino_embedding
from lorechat_pipeline.core.embedding import SentenceTransformerEmbedder
from lorechat_pipeline.core.encoder_process import ProcessEmbedder
from lorechat_pipeline.core.host import usable_cores
from lorechat_pipeline.core.onnx_embedding import (
    EXPORT_INFO,
    GRAPH,
    TOKENIZER,
    OnnxEmbedder,
    OnnxExportError,
    OnnxExportInfo,
    export_atomically,
    export_cache_folder,
    valid_export,
)
from lorechat_pipeline.core.openvino_embedding import OpenVinoEmbedder, native_reduced_precision
from lorechat_pipeline.defs.resources import embedder_resource
from lorechat_pipeline.resources.embedder import SentenceTransformerEmbedderResource
from lorechat_pipeline.settings import LocalEncoder, load_settings
from tests.network_guard import NETWORK_GUARD, run_guarded
from tests.pipeline.conftest import PipelineFactory, write

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"

# Lengths on purpose out of order, so sorting into batches and restoring the order is exercised.
DOCUMENTS = [
    "Green tea is best brewed at eighty degrees Celsius for two to three minutes. " * 7,  # ~500
    "x",
    # Past the model's 256 tokens: truncated exactly where sentence-transformers truncates.
    "Photovoltaic cells convert sunlight into electricity; inverters feed the grid. " * 40,
    "",
    "Ünïcödé, テキスト, Ελληνικά and emoji 🚀🌍 in one chunk — with ‘curly’ quotes…",
    "def parse(path: str) -> dict[str, int]:\n    return {k: len(v) for k, v in load(path)}\n" * 12,
    "Bleed the radiator.",
    "Le château d'eau alimente la ville ; la pression reste entre 1 et 2 bar. " * 5,
    "数据" * 300,  # one token per character: far past the limit
]


@pytest.fixture(scope="module")
def onnx(onnx_cache: Path) -> OnnxEmbedder:
    """onnxruntime on the session's export, as the pipeline's resource builds it."""
    resource = SentenceTransformerEmbedderResource(
        onnx_cache_dir=str(onnx_cache), encoder=LocalEncoder.ONNX, own_process=False
    )
    embedder = resource.get_embedder()
    assert type(embedder) is OnnxEmbedder
    return embedder


@pytest.fixture(scope="module")
def openvino(onnx_cache: Path) -> OpenVinoEmbedder:
    """The default local embedder, as the pipeline's resource builds it (the session's export)."""
    resource = SentenceTransformerEmbedderResource(
        onnx_cache_dir=str(onnx_cache), own_process=False
    )
    embedder = resource.get_embedder()
    assert isinstance(embedder, OpenVinoEmbedder)
    return embedder


def copy_export(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in (GRAPH, TOKENIZER, EXPORT_INFO):
        (folder / name).write_bytes((source / name).read_bytes())
    return folder


def test_document_vectors_match_torch_in_order(onnx: OnnxEmbedder, embedder: Any) -> None:
    assert onnx.max_tokens == embedder.max_tokens == 256
    # Small batches: several of them, each of texts of similar length.
    batched = OnnxEmbedder(onnx.folder, threads=onnx.threads, batch_size=3)
    exported, reference = batched.embed_documents(DOCUMENTS), embedder.embed_documents(DOCUMENTS)
    assert exported.shape == reference.shape == (len(DOCUMENTS), 384)
    assert exported.dtype == np.float32
    cosines = (exported * reference).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines
    # Row i is text i's vector: each row is nearest to its own text's torch vector.
    assert (np.argmax(exported @ reference.T, axis=1) == np.arange(len(DOCUMENTS))).all()
    alone = np.stack([onnx.embed_query(text) for text in DOCUMENTS])
    np.testing.assert_allclose(alone, exported, atol=1e-5)
    assert onnx.count_tokens(DOCUMENTS) == embedder.count_tokens(DOCUMENTS)
    assert onnx.embed_documents([]).shape == (0, 384)


def test_openvino_vectors_match_torch_in_order(openvino: OpenVinoEmbedder, embedder: Any) -> None:
    # Reduced precision exactly where the CPU computes it natively (and the bound held on load).
    assert openvino.precision == ("bf16" if native_reduced_precision() else "f32")
    batched = OpenVinoEmbedder(openvino.folder, threads=openvino.threads, batch_size=3)
    exported, reference = batched.embed_documents(DOCUMENTS), embedder.embed_documents(DOCUMENTS)
    assert exported.shape == reference.shape == (len(DOCUMENTS), 384)
    assert exported.dtype == np.float32
    assert (exported * reference).sum(axis=1).min() >= 0.9999
    assert (np.argmax(exported @ reference.T, axis=1) == np.arange(len(DOCUMENTS))).all()
    # A text's vector does not depend on the batch it is padded in, beyond the bound.
    alone = np.stack([openvino.embed_query(text) for text in DOCUMENTS])
    assert (alone * exported).sum(axis=1).min() >= 0.9999
    assert openvino.count_tokens(DOCUMENTS) == embedder.count_tokens(DOCUMENTS)
    # Counted while encoding: what the embedding step reports without tokenizing again.
    assert batched.input_tokens == embedder.count_tokens(DOCUMENTS)
    batched.embed_documents(DOCUMENTS[:2])
    assert batched.input_tokens == embedder.count_tokens(DOCUMENTS + DOCUMENTS[:2])
    assert openvino.embed_documents([]).shape == (0, 384)


def test_openvino_sees_few_input_shapes(openvino: OpenVinoEmbedder, onnx: OnnxEmbedder) -> None:
    """OpenVINO keeps memory per input shape: widths are rounded up to multiples of 8 (never
    past the model's limit), and the padding does not move a vector."""
    widths: list[int] = []

    class Recording:
        def run(self, outputs: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            widths.append(feed["input_ids"].shape[1])
            return list(openvino.session.run(outputs, feed))

    encoded = openvino._encode(["tea", "Bleed the radiator twice a year.", DOCUMENTS[2]])
    padded = np.concatenate([openvino._embed_batch([each], Recording()) for each in encoded])
    assert [len(each.ids) for each in encoded] == [3, 11, 256]
    assert widths == [8, 16, 256]
    unpadded = onnx.embed_documents(["tea", "Bleed the radiator twice a year.", DOCUMENTS[2]])
    assert (padded * unpadded).sum(axis=1).min() >= 0.9999


def test_an_openvino_vector_does_not_depend_on_what_it_is_embedded_with(
    openvino: OpenVinoEmbedder,
) -> None:
    """The same corpus gives the same index whatever order its documents arrive in: a text's
    vector is the same, bit for bit, alone or batched with longer and shorter texts."""
    words = DOCUMENTS[0].split() + DOCUMENTS[7].split()
    # Every length from 2 to 70 words: padded with their neighbours, most would be widened.
    texts = [*DOCUMENTS, *(" ".join(words[:length]) for length in range(2, 71, 3))]
    alone = np.stack([openvino.embed_documents([text])[0] for text in texts])
    np.testing.assert_array_equal(openvino.embed_documents(texts), alone)
    np.testing.assert_array_equal(openvino.embed_documents(texts[::-1])[::-1], alone)
    tight = OpenVinoEmbedder(openvino.folder, threads=openvino.threads, batch_size=2)
    np.testing.assert_array_equal(tight.embed_documents(texts), alone)


def test_reduced_precision_outside_the_parity_bound_falls_back_to_float32(
    openvino: OpenVinoEmbedder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(openvino_embedding, "_compiled", {})  # compile anew, not from the cache
    monkeypatch.setattr(openvino_embedding, "native_reduced_precision", lambda: True)
    # A bound no reduced-precision vector can keep: the load must notice and use float32.
    monkeypatch.setattr(openvino_embedding, "PARITY_COSINE", 1.5)
    strict = OpenVinoEmbedder(openvino.folder, threads=1)
    with caplog.at_level("WARNING", logger=openvino_embedding.__name__):
        assert strict.precision == "f32"
    assert "embedding in float32" in caplog.text
    vector, reference = strict.embed_query(DOCUMENTS[0]), openvino.embed_query(DOCUMENTS[0])
    assert float(vector @ reference) >= 0.9999

    monkeypatch.setattr(openvino_embedding, "_compiled", {})
    monkeypatch.setattr(openvino_embedding, "native_reduced_precision", lambda: False)
    monkeypatch.setattr(openvino_embedding, "PARITY_COSINE", 0.9999)
    assert OpenVinoEmbedder(openvino.folder, threads=1).precision == "f32"


def test_the_default_pipeline_embeds_with_openvino_under_the_torch_model_id(
    tmp_path: Path, onnx_cache: Path
) -> None:
    settings = load_settings(home=tmp_path)
    assert settings.local_encoder is LocalEncoder.OPENVINO
    default = embedder_resource(settings).get_embedder()
    assert isinstance(default, ProcessEmbedder)
    assert default.process.spec.runner == "openvino"
    onnx = embedder_resource(load_settings(home=tmp_path, local_encoder="onnx")).get_embedder()
    assert isinstance(onnx, ProcessEmbedder)
    assert onnx.process.spec.runner is LocalEncoder.ONNX
    assert onnx.model_id == default.model_id
    assert onnx.fingerprint == default.fingerprint
    assert default.threads == usable_cores()
    assert default.batch_size == settings.embedding_batch_size
    torch = embedder_resource(load_settings(home=tmp_path, local_encoder="torch")).get_embedder()
    assert isinstance(torch, SentenceTransformerEmbedder)
    assert default.model_id == torch.model_id == MODEL_ID
    assert default.fingerprint == torch.fingerprint
    # Without the session's cache the export goes under the home, where serving looks for it.
    assert load_settings(home=tmp_path, onnx_cache_dir=None).onnx_cache_path == (
        tmp_path.resolve() / "query-encoder"
    )


def test_an_ingested_index_holds_the_torch_vectors(
    tmp_path: Path, make_pipeline: PipelineFactory, embedder: Any
) -> None:
    source = tmp_path / "source"
    write(source, "tea.md", "# Tea\n\n" + DOCUMENTS[0])
    write(source, "solar.md", "# Solar\n\n" + DOCUMENTS[2] + "\n\n" + DOCUMENTS[4])
    pipeline = make_pipeline(source)
    assert isinstance(pipeline.embedder, ProcessEmbedder)
    assert pipeline.embedder.process.spec.runner == "openvino"
    pipeline.ingest()
    assert pipeline.manifest.embedding_model == MODEL_ID
    rows = pipeline.open_index().rows(None, ["text", "vector", "embedding_model"]).to_pylist()
    assert len(rows) >= 2
    assert {row["embedding_model"] for row in rows} == {MODEL_ID}
    stored = np.array([row["vector"] for row in rows], dtype=np.float32)
    reference = embedder.embed_documents([row["text"] for row in rows])
    assert (stored * reference).sum(axis=1).min() >= 0.9999


def test_partial_or_corrupt_exports_are_not_taken_for_whole_ones(
    tmp_path: Path, onnx: OnnxEmbedder
) -> None:
    def copy() -> Path:
        return copy_export(onnx.folder, tmp_path / f"copy-{len(list(tmp_path.iterdir()))}")

    assert valid_export(copy()) == onnx.info
    assert valid_export(tmp_path / "missing") is None
    no_description = copy()
    (no_description / EXPORT_INFO).unlink()  # an export interrupted before its last file
    assert valid_export(no_description) is None
    no_graph = copy()
    (no_graph / GRAPH).unlink()
    assert valid_export(no_graph) is None
    truncated = copy()
    with (truncated / GRAPH).open("r+b") as graph:
        graph.truncate(1000)
    assert valid_export(truncated) is None
    garbage = copy()
    (garbage / EXPORT_INFO).write_text("{not json")
    assert valid_export(garbage) is None
    older = copy()
    description = json.loads((older / EXPORT_INFO).read_text())
    (older / EXPORT_INFO).write_text(json.dumps({**description, "format": 1}))
    assert valid_export(older) is None


def test_a_whole_export_is_reused_without_exporting_again(
    tmp_path: Path, onnx: OnnxEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    folder = copy_export(onnx.folder, export_cache_folder(cache, MODEL_ID))
    stamp = (folder / GRAPH).stat().st_mtime_ns
    # Torch is not even importable here: an attempt to export would fail.
    monkeypatch.setitem(sys.modules, "torch", None)
    for encoder in (LocalEncoder.ONNX, LocalEncoder.OPENVINO):
        reused = SentenceTransformerEmbedderResource(
            onnx_cache_dir=str(cache), encoder=encoder
        ).get_embedder()
        assert isinstance(reused, ProcessEmbedder)
        assert reused.process.spec.runner == encoder.value
        assert reused.folder == folder
        assert float(reused.embed_query("tea") @ onnx.embed_query("tea")) >= 0.9999
    assert (folder / GRAPH).stat().st_mtime_ns == stamp


def test_of_two_exports_at_once_one_wins_whole(
    tmp_path: Path, onnx: OnnxEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The publication step, deterministically: another process publishes its export while ours
    runs; ours is dropped and the folder holds a whole export (theirs), never a mix."""
    folder = tmp_path / "cache" / "model"

    def export_copy(destination: Path, *_: Any) -> OnnxExportInfo:
        destination.mkdir(parents=True, exist_ok=True)
        for name in (GRAPH, TOKENIZER, EXPORT_INFO):
            (destination / name).write_bytes((onnx.folder / name).read_bytes())
        return OnnxExportInfo.read(destination)

    def racing_export(destination: Path, *args: Any) -> OnnxExportInfo:
        export_copy(folder)  # the other process, finishing first
        (folder / "theirs").write_text("")
        return export_copy(destination, *args)

    monkeypatch.setattr(onnx_embedding, "export_query_encoder", racing_export)
    assert export_atomically(folder) == onnx.info
    assert (folder / "theirs").exists()
    assert valid_export(folder) == onnx.info
    assert sorted(p.name for p in folder.parent.iterdir()) == ["model"]

    # The same race against a broken leftover: ours replaces it.
    (folder / GRAPH).write_bytes(b"broken")
    monkeypatch.setattr(onnx_embedding, "export_query_encoder", export_copy)
    assert export_atomically(folder) == onnx.info
    assert not (folder / "theirs").exists()
    assert valid_export(folder) == onnx.info
    assert sorted(p.name for p in folder.parent.iterdir()) == ["model"]


def test_a_failed_export_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    missing_model = tmp_path / "no-such-model"
    folder = export_cache_folder(cache, f"{missing_model}")
    said = r"\(exit code 1\): FileNotFoundError: .*no-such-model"
    with pytest.raises(OnnxExportError, match=said):
        onnx_embedding.ensure_export(folder, str(missing_model))
    assert valid_export(folder) is None
    assert not cache.exists() or list(cache.iterdir()) == []


# Runs in a fresh interpreter without HF_HUB_OFFLINE: every way out to the network raises and is
# recorded. Making the export (torch) and encoding with it (OpenVINO, the default) need nothing
# from a hub, and OpenVINO sends no telemetry.
OFFLINE_SCRIPT = (
    NETWORK_GUARD
    + r"""

from lorechat_pipeline.resources.embedder import SentenceTransformerEmbedderResource

resource = SentenceTransformerEmbedderResource(onnx_cache_dir=sys.argv[1])
embedder = resource.get_embedder()
vectors = embedder.embed_documents(json.loads(sys.argv[2]))
print(json.dumps({
    "attempts": attempts,
    "type": type(embedder).__name__,
    "model_id": embedder.model_id,
    "folder": str(embedder.folder),
    "vectors": vectors.tolist(),
    "torch_imported": "torch" in sys.modules,
}))
"""
)


def test_a_cut_short_export_is_rebuilt_offline(
    tmp_path: Path, onnx: OnnxEmbedder, embedder: Any
) -> None:
    cache = tmp_path / "cache"
    # What a killed copy or a full disk leaves: the description, half the graph.
    folder = copy_export(onnx.folder, export_cache_folder(cache, MODEL_ID))
    with (folder / GRAPH).open("r+b") as graph:
        graph.truncate((folder / GRAPH).stat().st_size // 2)
    assert valid_export(folder) is None
    report = run_guarded(
        OFFLINE_SCRIPT,
        str(cache),
        json.dumps(DOCUMENTS),
        unset=("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "LORECHAT_ONNX_CACHE_DIR"),
    )
    assert report["attempts"] == []  # the export's and the encoder's processes included
    assert report["type"] == "ProcessEmbedder"
    assert report["model_id"] == MODEL_ID
    assert Path(report["folder"]) == folder
    assert report["torch_imported"] is False  # the export ran in a process of its own
    assert valid_export(folder) == onnx.info  # exported again, whole
    assert sorted(p.name for p in cache.iterdir()) == [folder.name]  # nothing left over
    vectors = np.array(report["vectors"], dtype=np.float32)
    assert (vectors * embedder.embed_documents(DOCUMENTS)).sum(axis=1).min() >= 0.9999


TELEMETRY_SCRIPT = (
    NETWORK_GUARD
    + r"""
import tempfile, time
os.environ["HOME"] = tempfile.mkdtemp()  # no telemetry consent file: a fresh host
forks = []
fork = os.fork
os.fork = lambda: forks.append("os.fork") or fork()

from lorechat_pipeline.core.openvino_embedding import import_openvino

import_openvino().Core().available_devices
time.sleep(2)  # OpenVINO sends its import event from a thread pool, just after the import
print(json.dumps({
    "attempts": attempts,
    "forks": forks,
    "telemetry_loaded": sys.modules.get("openvino_telemetry") is not None,
}))
"""
)


def test_openvino_is_imported_without_its_telemetry() -> None:
    """Importing OpenVINO sends a usage event from a forked process unless CI=true or a consent
    file says no: neither holds on a production host, so CI's own variables are unset here."""
    report = run_guarded(TELEMETRY_SCRIPT, unset=("CI", "TF_BUILD", "JENKINS_URL"))
    assert report == {"attempts": [], "forks": [], "telemetry_loaded": False}
