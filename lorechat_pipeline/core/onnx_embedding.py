"""The query encoder without torch: an ONNX export of the sentence-transformers model.

The serving container embeds one short query per request. Torch costs it ~700 MB of image and
~17 ms per query on two cores; onnxruntime runs the same graph in a few milliseconds from a
~100 MB install. The export is made where torch is available (the image's build stage, or the
first `lorechat serve`), and records the id of the model it came from, so an index built by that
model accepts it and any other index refuses it, exactly as with the torch embedder.

Pooling and normalisation are done here in numpy; the export refuses models whose pipeline is
not transformer → mean pooling → normalise, the only one this code reproduces.
"""

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lorechat_pipeline.core.embedding import (
    Embedder,
    embedder_model_id,
    load_sentence_transformer,
    packaged_model_path,
)

EXPORT_FORMAT = 1
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

    @classmethod
    def read(cls, folder: Path) -> "OnnxExportInfo":
        path = folder / EXPORT_INFO
        try:
            payload = json.loads(path.read_text())
        except FileNotFoundError as error:
            raise OnnxExportError(
                f"{folder} is not an ONNX query encoder export (no {EXPORT_INFO}); make one with "
                "`lorechat export-query-encoder DIR`"
            ) from error
        if payload.get("format") != EXPORT_FORMAT:
            raise OnnxExportError(
                f"{path}: export format {payload.get('format')} is not {EXPORT_FORMAT}; re-export"
            )
        return cls(**payload)


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

    with torch.no_grad():
        torch.onnx.export(
            LastHiddenState(transformer),
            inputs,
            str(destination / GRAPH),
            input_names=list(INPUT_NAMES),
            output_names=["last_hidden_state"],
            dynamic_axes={name: axes for name in (*INPUT_NAMES, "last_hidden_state")},
            opset_version=17,
            dynamo=False,
        )
    tokenizer.backend_tokenizer.save(str(destination / TOKENIZER))
    getter = getattr(model, "get_embedding_dimension", None)
    getter = getter or model.get_sentence_embedding_dimension
    info = OnnxExportInfo(
        model_id=embedder_model_id(model_path, max_tokens),
        dimension=int(getter()),
        max_tokens=int(model.max_seq_length),
    )
    (destination / EXPORT_INFO).write_text(json.dumps(asdict(info), indent=2) + "\n")
    return info


class OnnxEmbedder(Embedder):
    """all-MiniLM-L6-v2 (or another exported model) through onnxruntime and `tokenizers`."""

    def __init__(self, folder: Path, *, threads: int = 1, batch_size: int = 16) -> None:
        try:
            import onnxruntime
            from tokenizers import Tokenizer
        except ImportError as error:  # pragma: no cover - depends on the installation
            raise OnnxExportError(
                "the ONNX query encoder needs onnxruntime and tokenizers installed"
            ) from error
        self.folder = folder
        self.info = OnnxExportInfo.read(folder)
        self.model_id = self.info.model_id
        self.dimension = self.info.dimension
        self.normalized = self.info.normalized
        self.batch_size = batch_size
        self.threads = threads
        options = onnxruntime.SessionOptions()
        # One thread per query: requests run side by side on the cores instead of contending
        # for them inside each query.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(folder / GRAPH), options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER))
        self.tokenizer.enable_truncation(self.info.max_tokens)
        self.tokenizer.enable_padding()
        # Tokenizer objects are not documented as thread-safe; encoding is microseconds.
        self._tokenizer_lock = threading.Lock()

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        batches = [
            self._embed_batch(list(texts[start : start + self.batch_size]))
            for start in range(0, len(texts), self.batch_size)
        ]
        return np.concatenate(batches)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        with self._tokenizer_lock:
            encoded = self.tokenizer.encode_batch(texts)
        feed = {
            "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64),
        }
        (hidden,) = self.session.run(["last_hidden_state"], feed)
        mask = feed["attention_mask"][:, :, None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.clip(norms, 1e-12, None), dtype=np.float32)


def main() -> None:
    """`python -m lorechat_pipeline.core.onnx_embedding DIR`: the image build stage's export."""
    import sys

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m lorechat_pipeline.core.onnx_embedding DESTINATION")
    info = export_query_encoder(Path(sys.argv[1]))
    print(json.dumps(asdict(info)))


if __name__ == "__main__":
    main()
