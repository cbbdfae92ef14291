"""The index manifest: the contract an index carries about how its vectors were made."""

import json
import re
from dataclasses import asdict, dataclass

from lorechat_pipeline.core.ids import fingerprint

SCHEMA_VERSION = 1
MANIFEST_METADATA_KEY = b"lorechat_manifest"


class ManifestMismatch(RuntimeError):
    pass


@dataclass(frozen=True)
class IndexManifest:
    embedding_model: str
    embedding_dimension: int
    metric: str
    normalized: bool
    chunker_version: str  # the chunking options' fingerprint
    chunker_description: str
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> "IndexManifest":
        return cls(**json.loads(raw))

    @property
    def embedder_fields(self) -> tuple[str, int, str, bool]:
        return (self.embedding_model, self.embedding_dimension, self.metric, self.normalized)

    def default_table_name(self) -> str:
        """A table per (model, chunker): changing either starts a new table instead of mixing."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.embedding_model.rsplit("/", 1)[-1].lower()).strip(
            "-"
        )
        digest = fingerprint(
            *map(str, self.embedder_fields),
            self.chunker_version,
            str(self.schema_version),
            length=8,
        )
        return f"chunks_{slug}_{digest}"

    def differences(self, other: "IndexManifest") -> list[str]:
        mine, theirs = asdict(self), asdict(other)
        return [
            f"{name}: index has {theirs[name]!r}, configured {mine[name]!r}"
            for name in mine
            if name != "chunker_description" and mine[name] != theirs[name]
        ]

    def require_compatible(self, stored: "IndexManifest", where: str) -> None:
        problems = self.differences(stored)
        if problems:
            raise ManifestMismatch(
                f"the index at {where} was built differently from this configuration ("
                + "; ".join(problems)
                + "). Vectors of different models or chunkers are never mixed: point "
                "LORECHAT_INDEX_TABLE at a new table (or leave it empty to derive one), "
                "or configure the embedder the index was built with."
            )

    def require_same_embedder(self, stored: "IndexManifest", where: str) -> None:
        """Reading needs only the same embedder: query vectors must live in the index's space."""
        if self.embedder_fields != stored.embedder_fields:
            raise ManifestMismatch(
                f"the index at {where} holds vectors of {stored.embedding_model} "
                f"({stored.embedding_dimension}-d, {stored.metric}); the configured embedder is "
                f"{self.embedding_model} ({self.embedding_dimension}-d, {self.metric}). Search "
                "with the embedder the index was built with, or promote an index version built "
                "with this one."
            )
