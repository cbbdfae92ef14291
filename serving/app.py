"""The FastAPI app: search and chat with citations over the current index version.

Imports neither dagster nor unstructured: the container needs only the index, the query embedder
and this package.
"""

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import boto3
import numpy as np
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from threadpoolctl import threadpool_limits

from lorechat_pipeline.core.embedding import Embedder
from lorechat_pipeline.core.memory import bound_heap_retention
from lorechat_pipeline.core.vector_index import sql_string
from serving.auth import (
    Admission,
    Forbidden,
    KeyRing,
    Overloaded,
    RateLimited,
    RateLimiter,
    Unauthorized,
)
from serving.chat import (
    BedrockGenerator,
    ExtractiveGenerator,
    GenerationFailed,
    Generator,
    OpenAICompatibleGenerator,
)
from serving.index import IndexReader, IndexUnavailable
from serving.models import (
    ChatRequest,
    ChatResponse,
    Citation,
    DocumentChunks,
    ErrorResponse,
    IndexInfo,
    SearchHit,
    SearchRequest,
    SearchResponse,
    UploadRequest,
    UploadResponse,
)
from serving.observability import Metrics, configure_logging, request_id_var
from serving.query_encoder import QueryBatcher, batched, build_query_embedder
from serving.search import (
    RESULT_COLUMNS,
    Hit,
    InvalidFilter,
    SearchMode,
    filter_sql,
    search,
    search_copy,
)
from serving.settings import ApiKey, GeneratorKind, ServingSettings
from serving.uploads import UploadRefused, presigned_upload, upload_client
from serving.workers import (
    ENCODER_ACTIVITY_FILE,
    METRICS_FOLDER,
    RATE_LIMITS_FILE,
    SharedEncoderActivity,
    SharedRateLimiter,
    cores_per_worker,
)

logger = logging.getLogger("lorechat.serving")
STATIC = Path(__file__).parent / "static"


class RequestTooLarge(Exception):
    pass


class NotFound(Exception):
    pass


@dataclass(frozen=True)
class Retrieval:
    """What a search or a chat question asks of the index, once checked."""

    query: str
    k: int
    mode: SearchMode
    filters: dict[str, Any] | None
    collections: list[str] | None


@dataclass
class Services:
    settings: ServingSettings
    embedder: Embedder
    reader: IndexReader
    keys: KeyRing
    limiter: RateLimiter
    generator: Generator
    metrics: Metrics
    admission: Admission
    # Queries encoded together when they arrive together, on as many encoders as the cores take.
    query_encoder: QueryBatcher
    _s3: Any = None

    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = upload_client(self.settings)
        return self._s3


def build_generator(settings: ServingSettings) -> Generator:
    if settings.generator is GeneratorKind.OPENAI:
        if not settings.openai_base_url:
            raise ValueError("LORECHAT_GENERATOR=openai needs LORECHAT_OPENAI_BASE_URL")
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAICompatibleGenerator(
            settings.openai_base_url,
            settings.openai_model,
            key,
            settings.generation_max_tokens,
            settings.generation_timeout_seconds,
            settings.generation_retry_seconds,
        )
    if settings.generator is GeneratorKind.BEDROCK:
        client = boto3.client(
            "bedrock-runtime",
            region_name=settings.aws_region,
            endpoint_url=settings.bedrock_endpoint_url,
        )
        return BedrockGenerator(settings.bedrock_model_id, client, settings.generation_max_tokens)
    return ExtractiveGenerator()


class BodyLimit:
    """Refuses bodies over the limit, declared or streamed, before the app reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise RequestTooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except RequestTooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "request_too_large",
                    "message": f"request body over {self.max_bytes} bytes",
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class Observe:
    """Request ids, the access log and request metrics, as plain ASGI: Starlette's
    `BaseHTTPMiddleware` would add a task group and a memory stream to every request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        presented = dict(scope.get("headers") or []).get(b"x-request-id", b"")
        request_id = presented.decode("latin-1")[:64] or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        responded = False

        async def send_with_request_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                # Server-Timing: the time spent in the server, for a client to tell it from the
                # network's and its own (the soak benchmark reports both).
                spent_ms = (time.perf_counter() - started) * 1000
                headers = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                    (b"server-timing", f"app;dur={spent_ms:.1f}".encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception:
            logger.exception("unhandled error")
            if responded:
                raise
            await error_response(500, "internal", "internal error; see the server log")(
                scope, receive, send_with_request_id
            )
        finally:
            duration = time.perf_counter() - started
            route_path = getattr(scope.get("route"), "path", "unmatched")
            found: Services | None = getattr(scope["app"].state, "services", None)
            if found is not None:
                found.metrics.requests.labels(route_path, scope["method"], str(status)).inc()
                found.metrics.latency.labels(route_path, scope["method"]).observe(duration)
            client = scope.get("client")
            logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(duration * 1000, 2),
                    "client": client[0] if client else None,
                },
            )
            request_id_var.reset(token)


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


# The key checks are async: they never block, and a sync dependency would cost each request a
# hop to the thread pool and back before the endpoint's own.
async def caller(request: Request) -> ApiKey:
    found = services(request)
    key = identify_key(request)
    client = request.client.host if request.client else "unknown"
    found.limiter.take(key.name if not found.keys.open else client, key.requests_per_minute)
    return key


Caller = Annotated[ApiKey, Depends(caller)]


async def scraper(request: Request) -> ApiKey:
    """A key is needed, but a metrics scrape does not spend the caller's rate limit."""
    return identify_key(request)


def identify_key(request: Request) -> ApiKey:
    found = services(request)
    header = request.headers.get("authorization", "")
    presented = header[7:].strip() if header.lower().startswith("bearer ") else None
    return found.keys.identify(presented or request.headers.get("x-api-key"))


Scraper = Annotated[ApiKey, Depends(scraper)]


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "request_id": request_id_var.get()}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(
    settings: ServingSettings | None = None, embedder: Embedder | None = None
) -> FastAPI:
    settings = settings or ServingSettings()
    page = (STATIC / "index.html").read_text(encoding="utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model = embedder or build_query_embedder(settings)
        model.embed_query("warm up")
        # Searches run side by side, one per core: a multi-threaded BLAS under each would spin
        # on cores already busy (13 ms instead of 0.4 ms to score one query's IVF lists).
        threadpool_limits(1, user_api="blas")
        bound_heap_retention()  # large buffers (index versions' copies) get their own mappings
        reader = IndexReader(settings, model, RESULT_COLUMNS)
        # Refuses to start on a missing index or one built with another embedding model.
        served = reader.open_initial()
        shared = settings.worker_state_dir
        limiter = (
            SharedRateLimiter(settings.rate_limit_per_minute, shared / RATE_LIMITS_FILE)
            if shared
            else RateLimiter(settings.rate_limit_per_minute)
        )
        services = Services(
            settings=settings,
            embedder=model,
            reader=reader,
            keys=KeyRing(settings.all_api_keys()),
            limiter=limiter,
            generator=build_generator(settings),
            metrics=Metrics(shared / METRICS_FOLDER if shared else None),
            query_encoder=batched(
                model,
                cores_per_worker(settings.workers),
                SharedEncoderActivity(shared / ENCODER_ACTIVITY_FILE) if shared else None,
            ),
            admission=Admission(
                settings.max_searches_in_flight,
                settings.search_queue_seconds,
            ),
        )
        services.metrics.index_rows.set(served.index.count())
        app.state.services = services
        logger.info("serving index version %s from %s", served.table, reader.uri)
        yield
        services.generator.close()
        services.query_encoder.close()
        reader.close()
        limiter.close()

    app = FastAPI(
        title="LoreChat",
        version="1",
        description="Search and chat with citations over a LoreChat vector index.",
        lifespan=lifespan,
        responses={
            400: {"model": ErrorResponse},
            401: {"model": ErrorResponse},
            403: {"model": ErrorResponse},
            413: {"model": ErrorResponse},
            422: {"model": ErrorResponse},
            429: {"model": ErrorResponse},
        },
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
        )

    app.add_middleware(Observe)

    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        return error_response(
            error.status_code, "http_error", str(error.detail), getattr(error, "headers", None)
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
            problems.append(f"{where or 'body'}: {item.get('msg')}")
        return error_response(422, "invalid_request", "; ".join(problems)[:2000])

    @app.exception_handler(Unauthorized)
    async def unauthorized(_: Request, error: Unauthorized) -> JSONResponse:
        return error_response(401, "unauthorized", str(error), {"WWW-Authenticate": "Bearer"})

    def plain_error(status: int, code: str) -> Callable[[Request, Exception], Awaitable[Any]]:
        async def handle(_: Request, error: Exception) -> JSONResponse:
            return error_response(status, code, str(error))

        return handle

    # Errors whose message is the whole answer: the status and a stable code for clients.
    for error_type, (status, code) in {
        Forbidden: (403, "forbidden"),
        InvalidFilter: (400, "invalid_filter"),
        UploadRefused: (400, "upload_refused"),
        NotFound: (404, "not_found"),
        GenerationFailed: (502, "generator_failed"),
    }.items():
        app.add_exception_handler(error_type, plain_error(status, code))

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, error: Overloaded) -> JSONResponse:
        request.app.state.services.metrics.overloaded.inc()
        return error_response(
            429, "overloaded", str(error), {"Retry-After": str(max(1, round(error.retry_after)))}
        )

    @app.exception_handler(RateLimited)
    async def rate_limited(request: Request, error: RateLimited) -> JSONResponse:
        request.app.state.services.metrics.rate_limited.inc()
        return error_response(
            429, "rate_limited", str(error), {"Retry-After": str(int(error.retry_after))}
        )

    @app.exception_handler(IndexUnavailable)
    async def index_unavailable(_: Request, error: IndexUnavailable) -> JSONResponse:
        return error_response(503, "index_unavailable", str(error), {"Retry-After": "5"})

    def scope_collections(key: ApiKey, collection: str | None) -> list[str] | None:
        """The collections a request may read (None: all)."""
        if collection is not None:
            if not key.allows(collection):
                raise Forbidden(f"this API key may not read collection {collection!r}")
            return [collection]
        return None if "*" in key.collections else list(key.collections)

    def check_query(settings: ServingSettings, query: str, k: int) -> None:
        if len(query) > settings.max_query_characters:
            raise InvalidFilter(
                f"query is {len(query)} characters; the limit is {settings.max_query_characters}"
            )
        if not query.strip():
            raise InvalidFilter("query is blank")
        if k > settings.max_k:
            raise InvalidFilter(f"k is {k}; the limit is {settings.max_k}")

    def to_hit(hit: Hit) -> SearchHit:
        row = hit.row
        metadata = json.loads(row["user_metadata"]) if row.get("user_metadata") else None
        return SearchHit(
            chunk_id=hit.chunk_id,
            score=round(hit.score, 6),
            text=row["text"],
            collection=row["collection"],
            citation=Citation(
                source=row["document"],
                version=row.get("source_version"),
                page=row.get("page_number"),
                section=row.get("section"),
                title=row.get("title"),
            ),
            metadata=metadata,
        )

    def retrieve(
        found: Services, asked: Retrieval, vector: np.ndarray | None = None
    ) -> tuple[list[SearchHit], str]:
        """A search on a worker thread: any version, any filter, LanceDB or Upstash (blocking
        calls). `vector`: the query's embedding when already made."""
        where = filter_sql(asked.filters, asked.collections)
        served = found.reader.current()

        def encode() -> np.ndarray:
            return found.query_encoder.embed_query(asked.query)

        hits = search(
            served.index,
            asked.mode,
            asked.query,
            encode if vector is None else vector,
            asked.k,
            where,
            nprobes=settings.search_nprobes,
            # Metadata filters go to LanceDB; the copy in memory knows only collections.
            resident=None if asked.filters else found.reader.resident_copy(served),
            collections=asked.collections,
        )
        return [to_hit(hit) for hit in hits], served.table

    async def retrieve_on_loop(found: Services, asked: Retrieval) -> tuple[list[SearchHit], str]:
        """A search answered on the event loop when the served version's copy in memory can
        answer it (no metadata filter, alias recently read): no thread hop for the request,
        only the encoder's. Anything else goes to `retrieve` on a worker thread."""
        filter_sql(asked.filters, asked.collections)  # a malformed filter is refused either way
        served = None if asked.filters else found.reader.current_if_checked()
        copy = None if served is None else found.reader.resident_copy(served)
        vector = None
        if served is not None and copy is not None:
            hits, vector = await search_copy(
                copy, asked.mode, asked.query, asked.k, asked.collections, found.query_encoder
            )
            if hits is not None:
                found.metrics.searches.labels("memory").inc()
                return [to_hit(hit) for hit in hits], served.table
        found.metrics.searches.labels("vector_store").inc()
        return await run_in_threadpool(retrieve, found, asked, vector)

    @app.get("/healthz", tags=["health"], summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Readiness: index opened, manifest checked, model loaded",
    )
    def readyz(request: Request) -> JSONResponse:
        found = services(request)
        try:
            served = found.reader.current()
        except IndexUnavailable as error:
            return JSONResponse({"status": "unavailable", "reason": str(error)}, status_code=503)
        if found.reader.problem:
            return JSONResponse(
                {"status": "stale", "index_version": served.table, "reason": found.reader.problem},
                status_code=503,
            )
        return JSONResponse(
            {"status": "ready", "index_version": served.table, "model": found.embedder.model_id}
        )

    @app.post("/v1/search", tags=["search"], response_model=SearchResponse)
    async def search_endpoint(body: SearchRequest, key: Caller, request: Request) -> Response:
        found = services(request)
        check_query(found.settings, body.query, body.k)
        collections = scope_collections(key, body.collection)
        async with found.admission.admit():
            hits, table = await retrieve_on_loop(
                found, Retrieval(body.query, body.k, body.mode, body.filter, collections)
            )
        answer = SearchResponse(hits=hits, mode=body.mode, index_version=table)
        # Validated when made: returned as a model, FastAPI would validate it again before
        # serializing (a tenth of a search's Python time).
        return Response(answer.model_dump_json(), media_type="application/json")

    @app.post(
        "/v1/chat",
        tags=["chat"],
        response_model=ChatResponse,
        responses={200: {"content": {"text/event-stream": {}}}, 502: {"model": ErrorResponse}},
    )
    def chat_endpoint(body: ChatRequest, key: Caller, request: Request) -> Any:
        found = services(request)
        question = next((m.content for m in reversed(body.messages) if m.role == "user"), None)
        if question is None:
            raise InvalidFilter("messages must contain a user message")
        check_query(found.settings, question, body.k)
        collections = scope_collections(key, body.collection)
        hits, table = retrieve(
            found, Retrieval(question, body.k, SearchMode.HYBRID, None, collections)
        )
        generator = found.generator
        if not body.stream:
            answer = generator.complete(body.messages, hits)
            return ChatResponse(
                answer=answer,
                kind=generator.kind,
                model=generator.model,
                citations=hits,
                index_version=table,
            )

        def events() -> Iterator[str]:
            citations = [hit.model_dump() for hit in hits]
            yield sse("citations", {"citations": citations, "index_version": table})
            try:
                for piece in generator.stream(body.messages, hits):
                    yield sse("token", {"text": piece})
            except GenerationFailed as error:
                yield sse("error", {"message": str(error)})
                return
            yield sse("done", {"kind": generator.kind, "model": generator.model})

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    @app.post("/v1/uploads", tags=["uploads"], response_model=UploadResponse)
    def upload_endpoint(body: UploadRequest, key: Caller, request: Request) -> UploadResponse:
        if not key.allows(body.collection):
            raise Forbidden(f"this API key may not upload into collection {body.collection!r}")
        found = services(request)
        return presigned_upload(found.s3(), found.settings, body)

    @app.get(
        "/v1/documents/{document:path}/chunks", tags=["inspection"], response_model=DocumentChunks
    )
    def document_chunks(document: str, key: Caller, request: Request) -> DocumentChunks:
        found = services(request)
        served = found.reader.current()
        where = f"document = {sql_string(document)}"
        rows = served.index.rows(where, [*RESULT_COLUMNS, "ordinal"]).to_pylist()
        rows = [row for row in rows if key.allows(row["collection"])]
        if not rows:
            raise NotFound(f"no chunks of {document!r} in the index")
        rows.sort(key=lambda row: row["ordinal"])
        return DocumentChunks(
            document=document, chunks=[to_hit(Hit(r["chunk_id"], 1.0, r)) for r in rows]
        )

    @app.get("/v1/index", tags=["inspection"], response_model=IndexInfo)
    def index_info(key: Caller, request: Request) -> IndexInfo:
        found = services(request)
        served = found.reader.current()
        alias = found.reader.aliases.read()
        documents = served.index.rows(None, ["document_id"]).column("document_id").unique()
        chunks = served.index.count()
        found.metrics.index_rows.set(chunks)
        return IndexInfo(
            index_version=served.table,
            uri=found.reader.uri,
            manifest=json.loads(served.index.manifest.to_json()),
            chunks=chunks,
            documents=len(documents),
            promoted_at=alias.promoted_at if alias else None,
            problem=found.reader.problem,
            resident_rows=resident.size if (resident := found.reader.resident_copy(served)) else 0,
            worker_pid=os.getpid(),
        )

    @app.get("/metrics", include_in_schema=False)
    def metrics(_: Scraper, request: Request) -> Response:
        return Response(services(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def chat_page() -> HTMLResponse:
        return HTMLResponse(page)

    return app


def create_worker_app() -> FastAPI:
    """One worker process's app (uvicorn's factory when LORECHAT_WORKERS > 1): its settings come
    from the environment the supervisor passed on."""
    configure_logging()
    return create_app(ServingSettings())


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"
