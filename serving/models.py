"""Request and response bodies of the `/v1` API (their JSON schema is the OpenAPI document)."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.search import SearchMode


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchRequest(Strict):
    query: str = Field(min_length=1, description="What to look for.")
    k: int = Field(default=5, ge=1, description="Number of hits (at most LORECHAT_MAX_K).")
    mode: SearchMode = SearchMode.HYBRID
    filter: dict[str, Any] | None = Field(
        default=None,
        description=(
            'Chunk metadata: {"field": value}, {"field": {"in": [...]}} or '
            '{"field": {"gte": 1, "lt": 5}}. Fields: document, collection, title, section, '
            "content_type, source_version, page_number, ordinal."
        ),
    )
    collection: str | None = Field(default=None, description="Only this collection.")


class Citation(BaseModel):
    source: str = Field(description="Source key relative to the source root.")
    version: str | None = Field(description="S3 version id or ETag the chunk was made from.")
    page: int | None
    section: str | None
    title: str | None


class SearchHit(BaseModel):
    chunk_id: str
    score: float
    text: str
    collection: str
    citation: Citation
    metadata: dict[str, Any] | None = Field(description="User metadata from the sidecar.")


class SearchResponse(BaseModel):
    hits: list[SearchHit]
    mode: SearchMode
    index_version: str


class ChatMessage(Strict):
    role: Literal["user", "assistant", "system"]
    content: str = Field(min_length=1)


class ChatRequest(Strict):
    messages: list[ChatMessage] = Field(min_length=1)
    k: int = Field(default=5, ge=1)
    collection: str | None = None
    stream: bool = False


class ChatResponse(BaseModel):
    answer: str
    kind: Literal["generated", "extractive"] = Field(
        description="extractive: no generator configured, the answer is the best passages."
    )
    model: str | None
    citations: list[SearchHit]
    index_version: str


class UploadRequest(Strict):
    filename: str = Field(min_length=1, max_length=255)
    content_type: str
    collection: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    size: int = Field(ge=1, description="Bytes the client will upload.")


class UploadResponse(BaseModel):
    url: str
    fields: dict[str, str] = Field(description="Form fields to POST with the file (last).")
    key: str = Field(description="The object key the document will have in the source.")
    expires_in: int
    max_bytes: int


class IndexInfo(BaseModel):
    index_version: str
    uri: str
    manifest: dict[str, Any]
    chunks: int
    documents: int
    promoted_at: str | None
    problem: str | None = Field(description="Why the alias target is not served, if it is not.")
    resident_rows: int = Field(
        description="Rows of the served version copied into memory for dense search (0: every "
        "search goes to the vector store; the copy is rebuilt in the background after a change)."
    )
    worker_pid: int = Field(
        description="The server process that answered: with LORECHAT_WORKERS > 1 each worker "
        "holds its own copy, and `resident_rows` is that worker's."
    )


class DocumentChunks(BaseModel):
    document: str
    chunks: list[SearchHit]


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
