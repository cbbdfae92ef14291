"""The query embedder the app runs: the ONNX export of the index's model (default), or torch.

The export is looked up in LORECHAT_QUERY_ENCODER_DIR (the image ships one made at build time)
or in a cache under LORECHAT_HOME, and made there on first use when torch is installed.
"""

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

import numpy as np

from lorechat_pipeline.core.bedrock_embedding import BedrockEmbedder
from lorechat_pipeline.core.deployment import EmbedderKind
from lorechat_pipeline.core.embedding import (
    Embedder,
    SentenceTransformerEmbedder,
    embedder_model_id,
)
from lorechat_pipeline.core.host import usable_cores
from lorechat_pipeline.core.onnx_embedding import (
    OnnxEmbedder,
    OnnxExportError,
    OnnxExportInfo,
    export_atomically,
    export_cache_folder,
    valid_export,
)
from serving.settings import QueryEncoder, ServingSettings

logger = logging.getLogger(__name__)
Result = TypeVar("Result")


def export_folder(settings: ServingSettings, model_id: str) -> Path:
    if settings.query_encoder_dir is not None:
        return settings.query_encoder_dir
    # The cache ingestion exports into too (LORECHAT_ONNX_CACHE_DIR there; the home's default).
    return export_cache_folder(settings.home / "query-encoder", model_id)


def build_query_embedder(settings: ServingSettings) -> Embedder:
    if settings.backends.embedder is EmbedderKind.BEDROCK:
        # The index's vectors came from Bedrock: so do the queries' (one call per query).
        return BedrockEmbedder.create(
            model=settings.bedrock_embedding_model_id,
            dimension=settings.bedrock_embedding_dimension,
            normalize=settings.bedrock_embedding_normalize,
            concurrency=1,
            region=settings.aws_region,
            endpoint_url=settings.bedrock_endpoint_url,
        )
    if settings.query_encoder is QueryEncoder.TORCH:
        return SentenceTransformerEmbedder(
            settings.embedding_model_path, max_tokens=settings.embedding_max_tokens
        )
    expected = embedder_model_id(settings.embedding_model_path, settings.embedding_max_tokens)
    folder = export_folder(settings, expected)
    found: OnnxExportInfo | None = valid_export(folder)  # None: missing, partial or corrupt
    if found is not None and found.model_id != expected:
        raise OnnxExportError(
            f"{folder} holds an export of {found.model_id}, but the configured model is "
            f"{expected}: point LORECHAT_QUERY_ENCODER_DIR at an export of it (or remove the "
            "folder to export again)"
        )
    if found is None:
        export_into(folder, settings)
    return OnnxEmbedder(folder, threads=settings.query_encoder_threads)


def concurrent_encodes(embedder: Embedder, cores: int) -> int:
    """How many queries to encode at once without oversubscribing `cores`."""
    if isinstance(embedder, OnnxEmbedder):
        return max(1, cores // embedder.threads)
    if isinstance(embedder, BedrockEmbedder):
        return 16  # remote calls: waiting on the network, not the cores
    return 1


def export_into(folder: Path, settings: ServingSettings) -> None:
    try:
        import torch  # noqa: F401 - only to tell a missing torch from a failed export
    except ImportError as error:
        raise OnnxExportError(
            f"no ONNX query encoder in {folder}, and torch is not installed to export one: set "
            "LORECHAT_QUERY_ENCODER_DIR to an export (`python -m "
            "lorechat_pipeline.core.onnx_embedding DIR` where torch is installed), or "
            "LORECHAT_QUERY_ENCODER=torch"
        ) from error
    logger.info("exporting the query encoder to %s (once)", folder)
    # Exported beside the destination and moved in whole: a concurrent start never reads half.
    export_atomically(folder, settings.embedding_model_path, settings.embedding_max_tokens)


class EncoderActivity:
    """Counts the encoder runs going on, to tell a query that comes alone (it may have every
    core) from one that comes under load."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0

    def begin(self) -> int:
        """One more run: how many were going on already."""
        with self._lock:
            self._running += 1
            return self._running - 1

    def end(self) -> None:
        with self._lock:
            self._running -= 1

    def close(self) -> None:
        """Nothing to release here; the workers' shared count unmaps its file."""


# Queries encoded in one run at most; beyond ~16 the run's fixed cost is already spread thin
# and a larger batch only makes its queries wait longer.
MAX_QUERIES_PER_RUN = 16


class QueryBatcher(Embedder):
    """Encodes the queries that arrive together in one run of the model.

    One run of the ONNX encoder reads all of the model's weights whatever the batch, and for a
    single short query that fixed cost is most of the run (on this CPU ~10 ms for one query,
    ~4.9 ms each for eight together). `encoders` threads take queries from one queue: an idle
    one takes a query at once (no wait added when there is no queue), a busy one takes every
    query waiting when it comes back, up to MAX_QUERIES_PER_RUN. With one encoder per core
    the cores are never oversubscribed by encoding.
    """

    def __init__(
        self,
        embedder: Embedder,
        encoders: int,
        max_batch: int = MAX_QUERIES_PER_RUN,
        *,
        solo: Embedder | None = None,
        activity: EncoderActivity | None = None,
    ):
        self.embedder = embedder
        # The same model over every core, for a query that finds nothing else encoding and
        # nothing waiting: one query's latency is what a lone client sees.
        self.solo = solo
        self.activity = activity or EncoderActivity()
        self.model_id = embedder.model_id
        self.dimension = embedder.dimension
        self.normalized = embedder.normalized
        self.metric = embedder.metric
        self.max_batch = max(1, max_batch)
        self._waiting: queue.SimpleQueue[tuple[str, Future[np.ndarray]] | None] = (
            queue.SimpleQueue()
        )
        self._encoders = [
            threading.Thread(target=self._encode_waiting, name=f"query-encoder-{n}", daemon=True)
            for n in range(max(1, encoders))
        ]
        for encoder in self._encoders:
            encoder.start()

    def embed_query(self, text: str) -> np.ndarray:
        done: Future[np.ndarray] = Future()
        self._waiting.put((text, done))
        return done.result()

    def submit_then(self, text: str, then: Callable[[np.ndarray], Result]) -> Future[Result]:
        """Queue `text` for encoding now; the future gives `then(vector)`, run on the encoder
        thread as soon as the vector is made. Work that releases the GIL (numpy's scoring of
        vectors) thus runs beside the event loop instead of on it. A future cancelled before
        its vector is made never runs `then`."""
        result: Future[Result] = Future()

        def carry_on(encoded: Future[np.ndarray]) -> None:
            if not result.set_running_or_notify_cancel():
                return  # the caller went away
            try:
                result.set_result(then(encoded.result()))
            except BaseException as error:
                result.set_exception(error)

        done: Future[np.ndarray] = Future()
        done.add_done_callback(carry_on)  # before queueing: so it runs on the encoder thread
        self._waiting.put((text, done))
        return result

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.embedder.embed_documents(texts)

    def close(self) -> None:
        for _ in self._encoders:
            self._waiting.put(None)
        for encoder in self._encoders:
            encoder.join(timeout=30)  # a run under way still counts itself out
        self.activity.close()

    def _encode_waiting(self) -> None:
        while (first := self._waiting.get()) is not None:
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            running = self.activity.begin()
            alone = running == 0 and len(batch) == 1 and self._waiting.empty()
            model = self.solo if alone and self.solo is not None else self.embedder
            try:
                vectors = model.embed_documents([text for text, _ in batch])
            except BaseException as error:  # every caller of the batch learns why
                for _, done in batch:
                    done.set_exception(error)
            else:
                for (_, done), vector in zip(batch, vectors, strict=True):
                    done.set_result(vector)
            finally:
                self.activity.end()
            if stop:
                return


def batched(
    embedder: Embedder, cores: int | None = None, activity: EncoderActivity | None = None
) -> QueryBatcher:
    """The embedder behind a QueryBatcher sized for it: remote embedders (Bedrock) get one
    query per call and many calls in flight; local ones one encoder per core of the `cores`
    this process may use (default: every core), and an ONNX one a second session over every
    core for a query that comes when no encoder is running (`activity` counts them: in every
    worker process when several share the machine)."""
    every_core = usable_cores()
    cores = cores or every_core
    if isinstance(embedder, BedrockEmbedder):
        return QueryBatcher(embedder, concurrent_encodes(embedder, cores), max_batch=1)
    solo = None
    if isinstance(embedder, OnnxEmbedder) and every_core > embedder.threads:
        # Not spinning: it shares the cores with the one-core sessions as soon as load comes.
        solo = OnnxEmbedder(embedder.folder, threads=every_core, spinning=False)
        solo.embed_query("warm up")  # its session loads now, not on the first lone query
    return QueryBatcher(embedder, concurrent_encodes(embedder, cores), solo=solo, activity=activity)
