"""The ONNX export of the model run by OpenVINO, in bfloat16 where the CPU computes it natively.

On CPUs with AVX-512 BF16 or AMX (recent EPYC and Xeon), OpenVINO's CPU plugin runs the graph's
matrix products in bfloat16 with float32 accumulation: about 1.9× the chunks per second of
onnxruntime in float32 on the reference machine, with vectors inside the project's parity bound
of the float32 ones (cosine ≥ 0.9999; ≥ 0.99995 measured over 2,007 windows of both Debian
document corpora, from one character to past the 256-token limit). The bound is not taken on
trust: when the model loads, its vectors for a set of probe texts must match the float32
graph's on this machine, else the float32 graph is used. On other CPUs OpenVINO runs float32,
about as fast as onnxruntime.

It reads the same export as `OnnxEmbedder` (same cache, same model id in the manifest), so an
index built by either accepts the other's queries.
"""

import logging
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from lorechat_pipeline.core.onnx_embedding import GRAPH, OnnxEmbedder, OnnxExportError

logger = logging.getLogger(__name__)

# The parity bound every encoder of a model must keep against its float32 vectors.
PARITY_COSINE = 0.9999
REDUCED_PRECISION = "bf16"
FULL_PRECISION = "f32"
# Short, long, past the token limit, code, several scripts: where reduced precision strays most.
PROBE_TEXTS = (
    "x",
    "Bleed the radiator.",
    "Green tea is best brewed at eighty degrees Celsius for two to three minutes. " * 7,
    "Photovoltaic cells convert sunlight into electricity; inverters feed the grid. " * 40,
    "def parse(path: str) -> dict[str, int]:\n    return {k: len(v) for k, v in load(path)}\n" * 12,
    "Ünïcödé, テキスト, Ελληνικά and emoji 🚀🌍 in one chunk — with ‘curly’ quotes…",
    "SELECT name FROM pg_catalog.pg_tables WHERE schemaname = 'public' ORDER BY 1;",
    "数据" * 300,
)


@dataclass(frozen=True)
class CompiledGraph:
    """An OpenVINO compiled model with onnxruntime's `run(outputs, feed)` shape, safe to call
    from several threads (an infer request per call: a request is not shareable)."""

    model: Any
    precision: str

    def run(self, outputs: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.model.create_infer_request().infer(feed)
        return [np.asarray(result[self.model.output(name)]) for name in outputs]


_compiled: dict[tuple[str, int, int, int], CompiledGraph] = {}
_compiled_lock = threading.Lock()


def import_openvino() -> Any:
    """`openvino`, without its usage telemetry. Importing it otherwise sends an event to Google
    Analytics from a forked process (unless a consent file in the home folder or CI=true says
    no): a network call from an offline pipeline, and a fork of a process whose LanceDB runtime
    and encoder threads are running. Without the `openvino_telemetry` module OpenVINO falls back
    to its own no-op stub."""
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    import openvino

    return openvino


def native_reduced_precision() -> bool:
    openvino = import_openvino()
    capabilities = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "BF16" in capabilities


def compile_graph(core: Any, model: Any, threads: int, precision: str) -> CompiledGraph:
    """`model`, read by `core` (an `openvino.Core`), compiled for the CPU at `precision`."""
    compiled = core.compile_model(
        model,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": precision,
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            # The parser workers share the cores: threads pinned to them would wait, not move.
            "ENABLE_CPU_PINNING": False,
        },
    )
    return CompiledGraph(compiled, precision)


class OpenVinoEmbedder(OnnxEmbedder):
    """`OnnxEmbedder`'s tokenization, batching and pooling, with OpenVINO running the graph."""

    # OpenVINO keeps memory per input shape: with every width from 1 to 256 tokens a process
    # grew by ~250 MB over 3,800 texts; rounded up to multiples of 8 it stays flat after the
    # first few hundred, at the same speed (masked padding costs ~3% more tokens).
    width_step = 8

    def __init__(self, folder: Path, *, threads: int = 1, batch_size: int = 16) -> None:
        try:
            import_openvino()  # fail here, not at the first encode
        except ImportError as error:  # pragma: no cover - depends on the installation
            raise OnnxExportError("the openvino encoder needs openvino installed") from error
        super().__init__(folder, threads=threads, batch_size=batch_size)

    def _batches(self, widths: list[int]) -> Iterator[slice]:
        """Runs of texts of one padded width only. In bfloat16 a text's vector moves with the
        width it is padded to (by up to ~1e-4), so a text padded to its own width always gets the
        same vector, whatever it is embedded with: the same corpus gives the same index whatever
        order its documents came in."""
        start = 0
        for end in range(1, len(widths) + 1):
            if end == len(widths) or widths[end] != widths[start] or end - start == self.batch_size:
                yield slice(start, end)
                start = end

    @property
    def precision(self) -> str:
        graph: CompiledGraph = self._load()
        return graph.precision

    @cached_property
    def session(self) -> Any:
        """The graph compiled once per file and thread count in a process (as `load_session`
        shares onnxruntime's), in bfloat16 when it keeps the parity bound here."""
        graph = self.folder / GRAPH
        stat = graph.stat()
        key = (str(graph), stat.st_mtime_ns, stat.st_size, self.threads)
        with _compiled_lock:
            if key not in _compiled:
                _compiled[key] = self._choose_precision(graph)
            return _compiled[key]

    def _choose_precision(self, graph: Path) -> CompiledGraph:
        openvino = import_openvino()
        core = openvino.Core()
        model = core.read_model(str(graph))
        full = compile_graph(core, model, self.threads, FULL_PRECISION)
        if not native_reduced_precision():
            return full
        reduced = compile_graph(core, model, self.threads, REDUCED_PRECISION)
        probes = self._encode(PROBE_TEXTS)
        cosines = (self._vectors(reduced, probes) * self._vectors(full, probes)).sum(axis=1)
        if float(cosines.min()) < PARITY_COSINE:
            logger.warning(
                "bfloat16 vectors stray from float32 ones on this CPU (cosine %.6f < %s); "
                "embedding in float32",
                float(cosines.min()),
                PARITY_COSINE,
            )
            return full
        return reduced

    def _vectors(self, graph: CompiledGraph, encoded: list[Any]) -> np.ndarray:
        return np.concatenate([self._embed_batch([each], graph) for each in encoded])
