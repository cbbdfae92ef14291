"""A loopback double of Upstash Vector's REST API, for contract tests (the service cannot run here).

It implements the documented wire format for the calls LoreChat makes — upsert, query (cosine,
with Upstash's filter syntax; sparse/hybrid with IDF weighting and RRF), fetch, range (prefix,
cursor), delete (ids, prefix or filter), info, list-namespaces, delete-namespace — with bearer
auth, Upstash's `{"result": ...}` / `{"error": ..., "status": N}` envelopes, its per-request
limits, and injectable failures (the next N calls answer 429 or 503) for the retry tests.

The filter parser here is written from Upstash's filter documentation, independently of
lorechat_pipeline/core/backends/upstash_filters.py, so the two check each other.
"""

import json
import math
import re
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

MAX_VECTORS = 1_000
MAX_TOP_K = 1_000
MAX_METADATA_BYTES = 48 * 1024
MAX_DATA_BYTES = 1024 * 1024
RRF_K = 60


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- Upstash's filter syntax ---------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
      | (?P<op><=|>=|!=|=|<|>)
      | (?P<punct>[(),])
      | (?P<word>[A-Za-z_][A-Za-z0-9_.\[\]]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"AND", "OR", "IN", "NOT", "GLOB", "CONTAINS", "HAS", "FIELD"}


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match:
            raise ApiError(400, f"Invalid filter: unexpected input at {position}")
        position = match.end()
        kind, raw = match.lastgroup, match.group(match.lastgroup or "")
        if kind == "string":
            tokens.append(("literal", re.sub(r"\\(.)", r"\1", raw[1:-1])))
        elif kind == "number":
            tokens.append(("literal", float(raw) if any(c in raw for c in ".eE") else int(raw)))
        elif kind in ("op", "punct"):
            tokens.append((raw, raw))
        elif raw.upper() in _KEYWORDS:
            tokens.append((raw.upper(), raw.upper()))
        elif raw in ("true", "false", "TRUE", "FALSE"):
            tokens.append(("literal", raw.lower() == "true"))
        else:
            tokens.append(("ident", raw))
    return tokens


class _FilterParser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position][0] if self.position < len(self.tokens) else None

    def take(self, kind: str) -> Any:
        if self.peek() != kind:
            raise ApiError(400, f"Invalid filter: expected {kind} at token {self.position}")
        self.position += 1
        return self.tokens[self.position - 1][1]

    def parse(self) -> Any:
        node = self.or_expr()
        if self.peek() is not None:
            raise ApiError(400, "Invalid filter: trailing input")
        return node

    def or_expr(self) -> Any:
        items = [self.and_expr()]
        while self.peek() == "OR":
            self.take("OR")
            items.append(self.and_expr())
        return ("or", items) if len(items) > 1 else items[0]

    def and_expr(self) -> Any:
        items = [self.primary()]
        while self.peek() == "AND":
            self.take("AND")
            items.append(self.primary())
        return ("and", items) if len(items) > 1 else items[0]

    def primary(self) -> Any:
        if self.peek() == "(":
            self.take("(")
            node = self.or_expr()
            self.take(")")
            return node
        if self.peek() == "HAS":
            self.take("HAS")
            negated = self.peek() == "NOT"
            if negated:
                self.take("NOT")
            self.take("FIELD")
            return ("has", self.take("ident"), negated)
        name = self.take("ident")
        kind = self.peek()
        if kind in ("=", "!=", "<", "<=", ">", ">="):
            self.take(kind)
            return ("cmp", name, kind, self.take("literal"))
        negated = kind == "NOT"
        if negated:
            self.take("NOT")
        if self.peek() == "IN":
            self.take("IN")
            self.take("(")
            values = [self.take("literal")]
            while self.peek() == ",":
                self.take(",")
                values.append(self.take("literal"))
            self.take(")")
            return ("in", name, values, negated)
        if self.peek() == "GLOB":
            self.take("GLOB")
            return ("glob", name, self.take("literal"), negated)
        self.take("CONTAINS")
        return ("contains", name, self.take("literal"), negated)


def _lookup(metadata: dict[str, Any], name: str) -> Any:
    value: Any = metadata
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _same_type(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool)
    if isinstance(left, int | float) and isinstance(right, int | float):
        return True
    return isinstance(left, str) and isinstance(right, str)


def matches(node: Any, metadata: dict[str, Any]) -> bool:
    kind = node[0]
    if kind == "and":
        return all(matches(item, metadata) for item in node[1])
    if kind == "or":
        return any(matches(item, metadata) for item in node[1])
    if kind == "has":
        present = _lookup(metadata, node[1]) is not None
        return present != node[2]
    value = _lookup(metadata, node[1])
    if value is None:
        return False
    if kind == "in":
        found = any(_same_type(value, v) and value == v for v in node[2])
        return found != node[3]
    if kind == "glob":
        import fnmatch

        return isinstance(value, str) and fnmatch.fnmatchcase(value, node[2]) != node[3]
    if kind == "contains":
        return isinstance(value, list) and (node[2] in value) != node[3]
    _, _, op, literal = node
    if not _same_type(value, literal):
        return False
    if op in ("=", "!="):
        return (value == literal) == (op == "=")
    if isinstance(value, str | bool):
        raise ApiError(400, f"Invalid filter: {op} applies to numbers only")
    return bool(
        {
            "<": value < literal,
            "<=": value <= literal,
            ">": value > literal,
            ">=": value >= literal,
        }[op]
    )


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


# -- the index ------------------------------------------------------------------------------------


@dataclass
class Record:
    vector: list[float]
    metadata: dict[str, Any] | None
    data: str | None
    sparse: dict[int, float] | None


@dataclass
class UpstashContractState:
    token: str
    dimension: int
    similarity: str = "COSINE"
    hybrid: bool = False
    max_body_bytes: int | None = None  # a request body limit (413 past it), off by default
    # Whether reading a namespace that does not exist (yet) is an error rather than empty: the
    # documentation does not say, so the index is tested against both.
    strict_namespaces: bool = False
    namespaces: dict[str, dict[str, Record]] = field(default_factory=lambda: {"": {}})
    failures: deque[tuple[int, str | None]] = field(default_factory=deque)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def fail_next(self, count: int, status: int = 503, retry_after: str | None = None) -> None:
        with self.lock:
            self.failures.extend([(status, retry_after)] * count)

    def calls(self, operation: str) -> list[tuple[str, str, Any]]:
        return [r for r in self.requests if r[1].split("/")[1] == operation]

    # -- operations --------------------------------------------------------------------------

    def _record_json(
        self, vector_id: str, record: Record, body: dict[str, Any], score: float | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"id": vector_id}
        if score is not None:
            out["score"] = score
        if body.get("includeVectors"):
            out["vector"] = record.vector
        if body.get("includeMetadata") and record.metadata is not None:
            out["metadata"] = record.metadata
        if body.get("includeData") and record.data is not None:
            out["data"] = record.data
        return out

    def upsert(self, namespace: str, body: Any) -> str:
        vectors = body if isinstance(body, list) else [body]
        if len(vectors) > MAX_VECTORS:
            raise ApiError(400, f"Too many vectors in one request: {len(vectors)} > {MAX_VECTORS}")
        parsed: dict[str, Record] = {}
        for item in vectors:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise ApiError(400, "Each vector needs a string id")
            vector = item.get("vector")
            if not isinstance(vector, list) or len(vector) != self.dimension:
                size = len(vector) if isinstance(vector, list) else 0
                raise ApiError(400, f"Invalid vector dimension: {size}, expected: {self.dimension}")
            metadata = item.get("metadata")
            if metadata is not None and _size(metadata) > MAX_METADATA_BYTES:
                raise ApiError(400, "Metadata size exceeds the limit of 48KB")
            data = item.get("data")
            if data is not None and len(data.encode()) > MAX_DATA_BYTES:
                raise ApiError(400, "Data size exceeds the limit of 1MB")
            sparse = item.get("sparseVector")
            if self.hybrid and sparse is None:
                raise ApiError(400, "Hybrid indexes need both a dense and a sparse vector")
            parsed[item["id"]] = Record(
                vector=[float(x) for x in vector],
                metadata=metadata,
                data=data,
                sparse=dict(zip(sparse["indices"], sparse["values"], strict=True))
                if sparse
                else None,
            )
        with self.lock:
            self.namespaces.setdefault(namespace, {}).update(parsed)
        return "Success"

    def _dense_scores(self, records: dict[str, Record], query: list[float]) -> dict[str, float]:
        if len(query) != self.dimension:
            raise ApiError(
                400, f"Invalid vector dimension: {len(query)}, expected: {self.dimension}"
            )
        q_norm = math.sqrt(sum(x * x for x in query))
        scores = {}
        for vector_id, record in records.items():
            dot = sum(a * b for a, b in zip(query, record.vector, strict=True))
            norm = math.sqrt(sum(x * x for x in record.vector)) * q_norm
            cosine = dot / norm if norm else 0.0
            scores[vector_id] = (1.0 + cosine) / 2.0  # Upstash's normalised cosine score
        return scores

    def _sparse_scores(
        self, records: dict[str, Record], query: dict[int, float], idf: bool
    ) -> dict[str, float]:
        total = len(records)
        frequency: dict[int, int] = {}
        for record in records.values():
            for index in record.sparse or {}:
                frequency[index] = frequency.get(index, 0) + 1
        scores = {}
        for vector_id, record in records.items():
            score = 0.0
            for index, value in query.items():
                if record.sparse and index in record.sparse:
                    n = frequency[index]
                    weight = math.log((total - n + 0.5) / (n + 0.5) + 1.0) if idf else 1.0
                    score += value * record.sparse[index] * weight
            if score > 0:
                scores[vector_id] = score
        return scores

    def query(self, namespace: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        top_k = int(body.get("topK", 10))
        if not 1 <= top_k <= MAX_TOP_K:
            raise ApiError(400, f"topK must be between 1 and {MAX_TOP_K}")
        node = _FilterParser(body["filter"]).parse() if body.get("filter") else None
        with self.lock:
            records = dict(self.namespaces.get(namespace, {}))
        candidates = {
            vector_id: record
            for vector_id, record in records.items()
            if node is None or matches(node, record.metadata or {})
        }
        dense = body.get("vector")
        sparse = body.get("sparseVector")
        if dense is None and sparse is None:
            raise ApiError(400, "Query needs a vector or a sparse vector")
        if sparse is not None and not self.hybrid:
            raise ApiError(400, "Sparse vectors can only be queried on sparse or hybrid indexes")
        rankings: list[dict[str, float]] = []
        if dense is not None:
            rankings.append(self._dense_scores(candidates, dense))
        if sparse is not None:
            query = dict(zip(sparse["indices"], sparse["values"], strict=True))
            idf = body.get("weightingStrategy") == "IDF"
            # IDF is over the whole namespace, not only the filtered candidates.
            all_scores = self._sparse_scores(records, query, idf)
            rankings.append({i: s for i, s in all_scores.items() if i in candidates})
        if len(rankings) == 1:
            scores = rankings[0]
        else:
            scores = {}
            for ranking in rankings:
                ordered = sorted(ranking, key=lambda i: (-ranking[i], i))
                for rank, vector_id in enumerate(ordered, start=1):
                    scores[vector_id] = scores.get(vector_id, 0.0) + 1.0 / (RRF_K + rank)
        best = sorted(scores, key=lambda i: (-scores[i], i))[:top_k]
        return [self._record_json(i, candidates[i], body, scores[i]) for i in best]

    def fetch(self, namespace: str, body: dict[str, Any]) -> list[dict[str, Any] | None]:
        with self.lock:
            records = self.namespaces.get(namespace, {})
            return [
                self._record_json(i, records[i], body) if i in records else None
                for i in body.get("ids", [])
            ]

    def range(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        limit = int(body.get("limit", 0))
        if limit <= 0:
            raise ApiError(400, "limit must be greater than 0")
        cursor = str(body.get("cursor", "0") or "0")
        if not cursor.isdigit():
            raise ApiError(400, "Invalid cursor")
        prefix = body.get("prefix") or ""
        with self.lock:
            records = self.namespaces.get(namespace, {})
            ids = sorted(i for i in records if i.startswith(prefix))
            offset = int(cursor)
            page = ids[offset : offset + limit]
            vectors = [self._record_json(i, records[i], body) for i in page]
        more = offset + limit < len(ids)
        return {"nextCursor": str(offset + limit) if more else "", "vectors": vectors}

    def delete(self, namespace: str, body: Any) -> dict[str, int]:
        if isinstance(body, list):
            body = {"ids": body}
        chosen = [name for name in ("ids", "prefix", "filter") if body.get(name) is not None]
        if len(chosen) != 1:
            raise ApiError(400, "Only one of ids, prefix or filter can be given")
        with self.lock:
            records = self.namespaces.get(namespace, {})
            if chosen == ["ids"]:
                doomed = [i for i in body["ids"] if i in records]
            elif chosen == ["prefix"]:
                doomed = [i for i in records if i.startswith(body["prefix"])]
            else:
                node = _FilterParser(body["filter"]).parse()
                doomed = [i for i, r in records.items() if matches(node, r.metadata or {})]
            for vector_id in doomed:
                del records[vector_id]
        return {"deleted": len(doomed)}

    def info(self) -> dict[str, Any]:
        with self.lock:
            namespaces = {
                name: {"vectorCount": len(records), "pendingVectorCount": 0}
                for name, records in self.namespaces.items()
            }
            total = sum(len(records) for records in self.namespaces.values())
        info: dict[str, Any] = {
            "vectorCount": total,
            "pendingVectorCount": 0,
            "indexSize": total * self.dimension * 4,
            "dimension": self.dimension,
            "similarityFunction": self.similarity,
            "denseIndex": {
                "dimension": self.dimension,
                "similarityFunction": self.similarity,
                "embeddingModel": None,
            },
            "namespaces": namespaces,
        }
        if self.hybrid:
            info["indexType"] = "HYBRID"
            info["sparseIndex"] = {"embeddingModel": None}
        else:
            info["indexType"] = "DENSE"
        return info

    def delete_namespace(self, namespace: str) -> str:
        with self.lock:
            if namespace == "":
                raise ApiError(400, "Cannot delete the default namespace")
            if namespace not in self.namespaces:
                raise ApiError(404, f"Namespace not found: {namespace}")
            del self.namespaces[namespace]
        return "Success"


ROUTES: dict[str, tuple[set[str], bool]] = {
    # operation → (accepted methods, takes a namespace). The documented methods, plus POST
    # everywhere as the official Python client sends.
    "upsert": ({"POST"}, True),
    "query": ({"POST"}, True),
    "fetch": ({"POST"}, True),
    "range": ({"POST"}, True),
    "delete": ({"POST", "DELETE"}, True),
    "info": ({"GET", "POST"}, False),
    "list-namespaces": ({"GET", "POST"}, False),
    "delete-namespace": ({"DELETE", "POST"}, True),
}


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: dict[str, Any], retry_after: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, retry_after: str | None = None) -> None:
        self._send(status, {"error": message, "status": status}, retry_after)

    def _handle(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        parts = path.strip("/").split("/", 1)
        operation = parts[0]
        namespace = unquote(parts[1]) if len(parts) > 1 else ""
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            self._error(400, "Missing or wrong input: body is not JSON")
            return
        with state.lock:
            state.requests.append((self.command, path, body))
            failure = state.failures.popleft() if state.failures else None
        if self.headers.get("Authorization") != f"Bearer {state.token}":
            self._error(401, "Unauthorized: Invalid auth token")
            return
        if state.max_body_bytes is not None and len(raw) > state.max_body_bytes:
            self._error(413, f"Request body too large: {len(raw)} > {state.max_body_bytes} bytes")
            return
        if failure is not None:
            status, retry_after = failure
            message = "Too many requests" if status == 429 else "Service unavailable"
            self._error(status, message, retry_after)
            return
        route = ROUTES.get(operation)
        if route is None or self.command not in route[0]:
            self._error(404, f"Not found: {self.command} {path}")
            return
        try:
            if (
                state.strict_namespaces
                and operation in ("query", "fetch", "range", "delete")
                and namespace not in state.namespaces
            ):
                raise ApiError(404, f"Namespace not found: {namespace}")
            if operation == "info":
                result: Any = state.info()
            elif operation == "list-namespaces":
                result = sorted(state.namespaces)
            elif operation == "delete-namespace":
                result = state.delete_namespace(namespace)
            elif operation == "upsert":
                result = state.upsert(namespace, body)
            elif operation == "delete":
                result = state.delete(namespace, body)
            else:
                result = getattr(state, operation)(namespace, body or {})
        except ApiError as error:
            self._error(error.status, error.message)
            return
        self._send(200, {"result": result})

    do_GET = do_POST = do_DELETE = _handle  # noqa: N815 - http.server's handler names


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: UpstashContractState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@dataclass
class RunningServer:
    url: str
    state: UpstashContractState


@contextmanager
def upstash_contract_server(
    *,
    token: str,
    dimension: int,
    similarity: str = "COSINE",
    hybrid: bool = False,
    strict_namespaces: bool = False,
) -> Iterator[RunningServer]:
    state = UpstashContractState(
        token=token,
        dimension=dimension,
        similarity=similarity,
        hybrid=hybrid,
        strict_namespaces=strict_namespaces,
    )
    server = _Server(state)
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="upstash-contract", daemon=True
    )
    thread.start()
    try:
        yield RunningServer(f"http://127.0.0.1:{server.server_address[1]}", state)
    finally:
        server.shutdown()
        server.server_close()
