"""The LoreChat Pipeline code location: assets, checks and jobs, with resources per environment."""

import dagster as dg

from lorechat_pipeline.defs.ingestion.assets import document_chunks, raw_documents
from lorechat_pipeline.defs.jobs import ingest_job
from lorechat_pipeline.defs.resources import build_resources
from lorechat_pipeline.defs.vectorization.assets import chunk_embeddings, vector_index
from lorechat_pipeline.defs.vectorization.checks import (
    vector_index_manifest,
    vector_index_row_count,
)
from lorechat_pipeline.settings import LorechatSettings, load_settings


def build_definitions(settings: LorechatSettings | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=[raw_documents, document_chunks, chunk_embeddings, vector_index],
        asset_checks=[vector_index_row_count, vector_index_manifest],
        jobs=[ingest_job],
        resources=build_resources(settings or load_settings()),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
