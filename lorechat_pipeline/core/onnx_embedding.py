"""The local model without torch at run time: an ONNX export of the sentence-transformers model.

The serving container embeds one short query per request. Torch costs it ~700 MB of image and
~17 ms per query on two cores; onnxruntime runs the same graph in a few milliseconds from a
~100 MB install. Ingestion embeds documents with the same export (the same vectors, cosine ≥
0.9999, ~1.6× the chunks per second of torch, its operators fused by onnxruntime's transformer
optimizer). The export is made where torch is available (the image's build stage, or the first
run) into a cache keyed by model and export format, and records the id of the model it came from,
so an index built by that model accepts it and any other index refuses it, exactly as with the
torch embedder.

Pooling and normalisation are done here in numpy; the export refuses models whose pipeline is
not transformer → mean pooling → normalise, the only one this code reproduces.
"""

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from lorechat_pipeline.core.child_process import package_environment
from lorechat_pipeline.core.embedding import (
    Embedder,
    embedder_model_id,
    load_sentence_transformer,
    packaged_model_path,
)

logger = logging.getLogger(__name__)

# 2: export.json records the size of each file, so a truncated or partial export is detected.
# 3: the graph is exported with eager attention and fused by onnxruntime's transformer optimizer.
EXPORT_FORMAT = 3
EXPORT_INFO = "export.json"
GRAPH = "model.onnx"
TOKENIZER = "tokenizer.json"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class OnnxExportError(RuntimeError):
    pass


@dataclass(frozen=True)
class OnnxExportInfo:
    model_id: str
    dimension: int
    max_tokens: int
    pooling: str = "mean"
    normalized: bool = True
    format: int = EXPORT_FORMAT
    # File name → size in bytes, checked on every read: a cut-short copy is not an export.
    files: dict[str, int] = field(default_factory=dict)
    # Layers whose attention runs as onnxruntime's fused Attention operator (0: graph unfused).
    fused_attention_layers: int = 0

    @classmethod
    def read(cls, folder: Path) -> "OnnxExportInfo":
        path = folder / EXPORT_INFO
        try:
            payload = json.loads(path.read_text())
        except FileNotFoundError as error:
            raise OnnxExportError(
                f"{folder} is not an ONNX query encoder export (no {EXPORT_INFO}); make one with "
                "`python -m lorechat_pipeline.core.onnx_embedding DIR`"
            ) from error
        except (ValueError, OSError) as error:
            raise OnnxExportError(f"{path} is unreadable ({error}); re-export") from error
        if not isinstance(payload, dict) or payload.get("format") != EXPORT_FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else None
            raise OnnxExportError(
                f"{path}: export format {found} is not {EXPORT_FORMAT}; re-export"
            )
        try:
            info = cls(**payload)
        except TypeError as error:
            raise OnnxExportError(f"{path} is not an export description ({error})") from error
        for name in (GRAPH, TOKENIZER):
            size = (folder / name).stat().st_size if (folder / name).is_file() else None
            if size is None or size != info.files.get(name):
                raise OnnxExportError(
                    f"{folder / name} is missing or incomplete ({size} bytes, export.json says "
                    f"{info.files.get(name)}); re-export"
                )
        return info


def export_query_encoder(
    destination: Path, model_path: str | None = None, max_tokens: int | None = None
) -> OnnxExportInfo:
    """Export the model (default: the packaged one) to `destination`; needs torch."""
    import torch

    model = load_sentence_transformer(model_path or str(packaged_model_path()), max_tokens)
    modules = list(model)
    pooling = modules[1] if len(modules) > 1 else None
    # sentence-transformers 6 names the mode `pooling_mode`; older releases had a getter.
    pooling_mode = (
        getattr(pooling, "pooling_mode", None)
        or getattr(pooling, "get_pooling_mode_str", lambda: "none")()
    )
    if len(modules) != 3 or pooling_mode != "mean" or type(modules[2]).__name__ != "Normalize":
        raise OnnxExportError(
            "only transformer → mean pooling → normalize models can be exported, not "
            + " → ".join(type(m).__name__ for m in modules)
        )
    transformer = modules[0].auto_model.eval()
    tokenizer = model.tokenizer
    sample = tokenizer(["an example query", "a second one"], padding=True, return_tensors="pt")
    inputs = tuple(sample[name] for name in INPUT_NAMES)
    destination.mkdir(parents=True, exist_ok=True)
    axes = {0: "batch", 1: "tokens"}

    class LastHiddenState(torch.nn.Module):
        # The graph returns only what pooling reads; the exporter gets a plain tensor output.
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
            ).last_hidden_state

    unfused = destination / f"unfused-{GRAPH}"
    # The eager attention graph is the one onnxruntime's transformer optimizer recognises (the
    # SDPA export is not fused). The loaded model is shared within the process: restored after.
    attention = getattr(transformer.config, "_attn_implementation", None)
    transformer.set_attn_implementation("eager")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer's notes on the model's Python branches and index ops: the export is
            # checked against the model itself (tests/serving/test_query_encoder.py).
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", "Exporting aten::index operator", UserWarning)
            torch.onnx.export(
                LastHiddenState(transformer),
                inputs,
                str(unfused),
                input_names=list(INPUT_NAMES),
                output_names=["last_hidden_state"],
                dynamic_axes={name: axes for name in (*INPUT_NAMES, "last_hidden_state")},
                opset_version=17,
                dynamo=False,
            )
    finally:
        if attention is not None:
            transformer.set_attn_implementation(attention)
    feed = {name: sample[name].numpy() for name in INPUT_NAMES}
    fused_layers = fuse_operators(unfused, destination / GRAPH, transformer.config, feed)
    tokenizer.backend_tokenizer.save(str(destination / TOKENIZER))
    getter = getattr(model, "get_embedding_dimension", None)
    getter = getter or model.get_sentence_embedding_dimension
    info = OnnxExportInfo(
        model_id=embedder_model_id(model_path, max_tokens),
        dimension=int(getter()),
        max_tokens=int(model.max_seq_length),
        files={name: (destination / name).stat().st_size for name in (GRAPH, TOKENIZER)},
        fused_attention_layers=fused_layers,
    )
    # Written last: an export without its description is never taken for a whole one.
    (destination / EXPORT_INFO).write_text(json.dumps(asdict(info), indent=2) + "\n")
    return info


# Fused and unfused graphs compute the same function in float32; they differ by rounding only.
FUSION_TOLERANCE = 1e-4


def fuse_operators(unfused: Path, destination: Path, config: Any, feed: dict[str, Any]) -> int:
    """Write `unfused`'s graph to `destination` with onnxruntime's transformer fusions (attention,
    embedding + layer norm, skip layer norm, bias + GELU as single operators: ~10% more chunks per
    second on ingestion's batches), and return the fused attention layers.

    The fused graph is kept only when it gives the unfused graph's outputs on `feed`; otherwise
    (a model the optimizer misreads) the unfused graph is used as it is."""
    import onnxruntime
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        # Level 1 (basic) graph rewrites only: hardware-independent, so an export made on the
        # image's build machine runs on any CPU.
        optimized = optimize_model(
            str(unfused),
            model_type="bert",
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
            opt_level=1,
        )
        optimized.save_model_to_file(str(destination))
        fused_layers = int(optimized.get_fused_operator_statistics().get("Attention", 0))
    except Exception as error:  # an optimisation only: the unfused graph still works
        logger.warning("the ONNX graph was not fused (%s); using it unfused", error)
        unfused.replace(destination)
        return 0

    def outputs(graph: Path) -> Any:
        session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        return session.run(["last_hidden_state"], feed)[0]

    difference = float(np.abs(outputs(destination) - outputs(unfused)).max())
    if difference > FUSION_TOLERANCE:
        logger.warning(
            "the fused ONNX graph differs from the export by %.2g; using it unfused", difference
        )
        unfused.replace(destination)
        return 0
    unfused.unlink()
    return fused_layers


def export_cache_folder(cache: Path, model_id: str) -> Path:
    """The folder of `model_id`'s export in a cache ($LORECHAT_HOME/query-encoder by default,
    shared by ingestion and serving); the export format is part of the key, so a new format
    never reads an old one."""
    digest = hashlib.sha256(f"{model_id}\n{EXPORT_FORMAT}".encode()).hexdigest()[:16]
    return cache.expanduser().resolve() / digest


def valid_export(folder: Path) -> OnnxExportInfo | None:
    """The export in `folder`, or None when there is none, or only part of one."""
    try:
        return OnnxExportInfo.read(folder)
    except OnnxExportError:
        return None


def export_atomically(
    folder: Path, model_path: str | None = None, max_tokens: int | None = None
) -> OnnxExportInfo:
    """Export into a staging folder beside `folder` and move it in whole: a reader never sees
    half an export, and of two processes exporting at once one wins and the other uses its."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        info = export_query_encoder(staging, model_path, max_tokens)
        for _ in range(3):
            try:
                staging.rename(folder)  # atomic; fails when `folder` exists and is not empty
                return info
            except OSError:
                if not folder.exists():
                    continue
            if valid_export(folder) is not None:
                return OnnxExportInfo.read(folder)  # a concurrent export finished first
            # A partial or corrupt export: moved aside (atomically) before ours takes its place.
            stale = folder.parent / f".stale-{uuid.uuid4().hex}"
            try:
                folder.rename(stale)
            except OSError:
                continue  # someone else moved it first
            shutil.rmtree(stale, ignore_errors=True)
        raise OnnxExportError(f"could not move an export into {folder}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_in_a_child_process(
    folder: Path, model_path: str | None = None, max_tokens: int | None = None
) -> OnnxExportInfo:
    """`export_atomically` in a process of its own: torch, the traced model and what tracing
    allocates (~640 MB) leave with it, instead of staying for the life of the process that asked
    (a pipeline, a Dagster run)."""
    command = [sys.executable, "-m", __name__, "--atomically", str(folder)]
    if model_path is not None:
        command += ["--model-path", model_path]
    if max_tokens is not None:
        command += ["--max-tokens", str(max_tokens)]
    finished = subprocess.run(
        command,
        env=package_environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if finished.returncode != 0:
        logger.error("the export process said:\n%s", finished.stderr)
        lines = [line for line in finished.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1][-1000:] if lines else "nothing on stderr"  # the exception, raised last
        raise OnnxExportError(
            f"exporting {embedder_model_id(model_path, max_tokens)} into {folder} failed "
            f"(exit code {finished.returncode}): {reason}"
        )
    return OnnxExportInfo.read(folder)


def ensure_export(
    folder: Path, model_path: str | None = None, max_tokens: int | None = None
) -> OnnxExportInfo:
    """The export of the model in `folder`: read when whole, (re)made when missing or partial."""
    expected = embedder_model_id(model_path, max_tokens)
    info = valid_export(folder)
    if info is None:
        if importlib.util.find_spec("torch") is None:
            raise OnnxExportError(
                f"no ONNX export of {expected} in {folder}, and torch is not installed to make "
                "one (`python -m lorechat_pipeline.core.onnx_embedding DIR` where it is)"
            )
        info = export_in_a_child_process(folder, model_path, max_tokens)
    if info.model_id != expected:
        raise OnnxExportError(
            f"{folder} holds an export of {info.model_id}, not of {expected}; remove the folder "
            "to export again"
        )
    return info


_sessions: dict[tuple[str, int, int, int, bool], Any] = {}
_sessions_lock = threading.Lock()


def load_session(graph: Path, threads: int, *, spinning: bool = True) -> Any:
    """One onnxruntime session per graph file and thread count in a process, shared (as the torch
    models are): every Dagster run builds its resources anew, and a session per run would keep
    its weights and memory arena (~300 MB) for as long as the process lives.

    `spinning`: whether the session's threads busy-wait between operators (faster for a session
    that has the cores to itself; a session that shares them must not burn them while idle)."""
    import onnxruntime

    stat = graph.stat()
    key = (str(graph), stat.st_mtime_ns, stat.st_size, threads, spinning)
    with _sessions_lock:
        if key not in _sessions:
            options = onnxruntime.SessionOptions()
            # Serving: one thread per query, requests side by side on the cores. Ingestion:
            # one encode at a time over every core.
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            if not spinning:
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            _sessions[key] = onnxruntime.InferenceSession(
                str(graph), options, providers=["CPUExecutionProvider"]
            )
        return _sessions[key]


class ExportEmbedder(Embedder):
    """An embedder of the export in `folder`: its model id, dimension and token limit are the
    export's description's, whatever runs the graph (here or in a child process)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.info = OnnxExportInfo.read(folder)
        self.model_id = self.info.model_id
        self.dimension = self.info.dimension
        self.normalized = self.info.normalized
        self.max_tokens = self.info.max_tokens


class OnnxEmbedder(ExportEmbedder):
    """all-MiniLM-L6-v2 (or another exported model) through onnxruntime and `tokenizers`.

    Texts are tokenized together, sorted by token count and batched so that each batch pads to
    nearly its own length; vectors come back in the order of the texts."""

    width_step = 1

    def __init__(
        self, folder: Path, *, threads: int = 1, batch_size: int = 16, spinning: bool = True
    ) -> None:
        try:
            import onnxruntime  # noqa: F401 - fail here, not at the first encode
            from tokenizers import Tokenizer
        except ImportError as error:  # pragma: no cover - depends on the installation
            raise OnnxExportError(
                "the ONNX encoder needs onnxruntime and tokenizers installed"
            ) from error
        super().__init__(folder)
        self.batch_size = batch_size
        self.threads = threads
        self.spinning = spinning
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER))
        # Truncated exactly where sentence-transformers truncates (its max_seq_length); padded
        # here, per batch.
        self.tokenizer.enable_truncation(self.info.max_tokens)
        self.tokenizer.no_padding()
        self._pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        # Tokenizer objects are not documented as thread-safe; encoding is microseconds.
        self._tokenizer_lock = threading.Lock()
        self._session_lock = threading.Lock()
        self._tokens_read = 0

    @cached_property
    def session(self) -> Any:
        return load_session(self.folder / GRAPH, self.threads, spinning=self.spinning)

    def warm_up_in_background(self) -> None:
        threading.Thread(target=self._load, name="embedder-warm-up", daemon=True).start()

    def _load(self) -> Any:
        with self._session_lock:  # one load, whichever thread asks first
            return self.session

    def _encode(self, texts: Sequence[str]) -> list[Any]:
        with self._tokenizer_lock:
            return list(self.tokenizer.encode_batch(list(texts)))

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model reads (after truncation), as SentenceTransformerEmbedder counts."""
        return sum(len(e.ids) for e in self._encode(texts))

    @property
    def input_tokens(self) -> int:
        """Tokens the model has read across `embed_documents` calls so far (counted while
        encoding, as Bedrock reports its own; `count_tokens` would tokenize again)."""
        return self._tokens_read

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encoded = self._encode(texts)
        with self._tokenizer_lock:
            self._tokens_read += sum(len(e.ids) for e in encoded)
        order = np.argsort([-len(e.ids) for e in encoded], kind="stable")
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        for batch in self._batches([self._width(len(encoded[i].ids)) for i in order]):
            rows = order[batch]
            vectors[rows] = self._embed_batch([encoded[i] for i in rows])
        return vectors

    def _width(self, tokens: int) -> int:
        """The padded width of a text of `tokens` tokens: rounded up to a multiple of
        `width_step`, never past the model's limit (padding is masked out)."""
        return min(-(-tokens // self.width_step) * self.width_step, max(tokens, self.max_tokens))

    def _batches(self, widths: list[int]) -> Iterator[slice]:
        """Consecutive runs of texts (sorted longest first, `widths` their padded widths) to
        encode together: `batch_size` at a time, each padded to its longest."""
        for start in range(0, len(widths), self.batch_size):
            yield slice(start, start + self.batch_size)

    def _embed_batch(self, encoded: list[Any], graph: Any = None) -> np.ndarray:
        """`graph`: what runs the model (anything with onnxruntime's `run`); the session by
        default."""
        width = self._width(max(len(e.ids) for e in encoded))
        feed = {name: np.zeros((len(encoded), width), dtype=np.int64) for name in INPUT_NAMES}
        feed["input_ids"].fill(self._pad_id)
        for row, e in enumerate(encoded):
            feed["input_ids"][row, : len(e.ids)] = e.ids
            feed["attention_mask"][row, : len(e.ids)] = e.attention_mask
            feed["token_type_ids"][row, : len(e.ids)] = e.type_ids
        (hidden,) = (graph or self._load()).run(["last_hidden_state"], feed)
        mask = feed["attention_mask"][:, :, None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.clip(norms, 1e-12, None), dtype=np.float32)


def main() -> None:
    """`python -m lorechat_pipeline.core.onnx_embedding DIR`: the image build stage's export;
    with `--atomically`, an export published whole into a shared cache (`ensure_export`'s)."""
    import argparse

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="python -m lorechat_pipeline.core.onnx_embedding")
    parser.add_argument("destination", type=Path)
    parser.add_argument("--atomically", action="store_true", help="stage, then move in whole")
    parser.add_argument("--model-path", default=None)
    parser.add_argument("--max-tokens", type=int, default=None)
    args = parser.parse_args()
    export = export_atomically if args.atomically else export_query_encoder
    info = export(args.destination, args.model_path, args.max_tokens)
    print(json.dumps(asdict(info)))


if __name__ == "__main__":
    main()
