"""The environment switch: which backends `LORECHAT_ENVIRONMENT` chooses, decided in one place.

Both settings modules (the pipeline's and the serving container's) read their variables and then
ask `backends_for` what an unset `LORECHAT_VECTOR_STORE` or `LORECHAT_EMBEDDER` means; an explicit
variable always wins. No environment is read here (and no dagster import: serving uses it).
"""

from dataclasses import dataclass
from enum import StrEnum


class Environment(StrEnum):
    LOCAL = "local"  # folder or S3-compatible source, sentence-transformers, LanceDB
    AWS = "aws"  # S3, Bedrock embeddings, Upstash Vector (or LanceDB on S3)


class VectorStoreKind(StrEnum):
    LANCEDB = "lancedb"
    UPSTASH = "upstash"


class EmbedderKind(StrEnum):
    LOCAL = "local"  # sentence-transformers (the packaged all-MiniLM-L6-v2 by default)
    BEDROCK = "bedrock"  # Amazon Bedrock (Titan Text Embeddings v2 by default)


class LocalEncoder(StrEnum):
    """How the local embedder runs its model: the same vectors (cosine ≥ 0.9999 against
    sentence-transformers' float32) and the same model id every way."""

    # OpenVINO on the ONNX export, in bfloat16 where the CPU computes it natively and the
    # vectors keep the parity bound on load (~1.8× onnxruntime on the reference machine).
    OPENVINO = "openvino"
    ONNX = "onnx"  # onnxruntime on an ONNX export of the model (exported once, with torch)
    TORCH = "torch"  # sentence-transformers


@dataclass(frozen=True)
class Backends:
    vector_store: VectorStoreKind
    embedder: EmbedderKind


# One dict, indexed once: what each environment runs when nothing else is said.
ENVIRONMENT_DEFAULTS: dict[Environment, Backends] = {
    Environment.LOCAL: Backends(VectorStoreKind.LANCEDB, EmbedderKind.LOCAL),
    Environment.AWS: Backends(VectorStoreKind.UPSTASH, EmbedderKind.BEDROCK),
}


def backends_for(
    environment: Environment,
    vector_store: VectorStoreKind | None = None,
    embedder: EmbedderKind | None = None,
) -> Backends:
    defaults = ENVIRONMENT_DEFAULTS[environment]
    return Backends(vector_store or defaults.vector_store, embedder or defaults.embedder)
