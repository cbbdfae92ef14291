"""A small Upstash Vector REST client over httpx, with the retries the official client lacks.

Wire format (Upstash's REST API): `Authorization: Bearer <token>` on every call; a namespace is
the last path segment (`/upsert/{ns}`, none for the default namespace); every answer is
`{"result": ...}` and every error `{"error": "...", "status": N}`.

The official `upstash-vector` client retries only on transport errors and never looks at the
status code, so a 429 or a 503 fails a whole ingest. Here 429, 5xx and transport errors are
retried with bounded exponential backoff and full jitter (honouring Retry-After), and 401/403
become an error naming the setting to fix. The token is never logged, never put in an error and
never shown by repr.
"""

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from lorechat_pipeline.core.backends.retry import Backoff, parse_retry_after

logger = logging.getLogger(__name__)

URL_SETTING = "UPSTASH_VECTOR_REST_URL"
TOKEN_SETTING = "UPSTASH_VECTOR_REST_TOKEN"
SECRET_ID_SETTING = "LORECHAT_UPSTASH_SECRET_ID"

# Upstash's documented per-request and per-vector limits.
MAX_VECTORS_PER_REQUEST = 1_000
MAX_TOP_K = 1_000
MAX_RANGE_PAGE = 1_000
MAX_METADATA_BYTES = 48 * 1024
MAX_DATA_BYTES = 1024 * 1024


# botocore logs whole request and response bodies at DEBUG, a secret's value among them.
BOTOCORE_BODY_LOGGERS = ("botocore.endpoint", "botocore.parsers")


@contextlib.contextmanager
def botocore_bodies_unlogged() -> Iterator[None]:
    """While a secret is read, botocore's body-logging loggers stay at INFO or above."""
    loggers = [logging.getLogger(name) for name in BOTOCORE_BODY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.INFO))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class UpstashError(RuntimeError):
    """Any failure talking to Upstash Vector."""


class UpstashCredentialsError(UpstashError):
    """Credentials are missing, unreadable or rejected; the message names the setting to fix."""


class UpstashRequestError(UpstashError):
    def __init__(self, status: int, message: str, operation: str) -> None:
        super().__init__(f"Upstash Vector refused {operation} ({status}): {message}")
        self.status = status
        self.upstash_message = message


class UpstashUnavailable(UpstashError):
    """Throttled or failing after every allowed attempt."""


@dataclass(frozen=True)
class UpstashCredentials:
    url: str
    token: str

    def __repr__(self) -> str:
        # The token must never reach a log line, a traceback or Dagster metadata.
        return f"UpstashCredentials(url={self.url!r}, token='***')"

    __str__ = __repr__

    @classmethod
    def from_values(
        cls, url: str | None, token: str | None, *, source: str = "the environment"
    ) -> "UpstashCredentials":
        missing = [
            name for name, value in ((URL_SETTING, url), (TOKEN_SETTING, token)) if not value
        ]
        if missing:
            raise UpstashCredentialsError(
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set in "
                f"{source}: set {URL_SETTING} and {TOKEN_SETTING} (from the Upstash console), or "
                f"{SECRET_ID_SETTING} to an AWS Secrets Manager secret holding both"
            )
        assert url is not None
        assert token is not None
        if not url.startswith(("https://", "http://")):
            # Not echoed: a token pasted into the wrong setting must not reach a log.
            raise UpstashCredentialsError(
                f"{URL_SETTING} from {source} is not a URL: it is the index's REST URL from the "
                "Upstash console, https://<name>-<region>-vector.upstash.io"
            )
        return cls(url=url.rstrip("/"), token=token)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "UpstashCredentials":
        env = os.environ if env is None else env
        return cls.from_values(env.get(URL_SETTING), env.get(TOKEN_SETTING))

    @classmethod
    def from_secrets_manager(
        cls,
        secret_id: str,
        *,
        client: Any = None,
        region: str | None = None,
        endpoint_url: str | None = None,
    ) -> "UpstashCredentials":
        """A secret whose SecretString is a JSON object with both settings by name."""
        if client is None:
            import boto3

            client = boto3.client("secretsmanager", region_name=region, endpoint_url=endpoint_url)
        try:
            with botocore_bodies_unlogged():
                response = client.get_secret_value(SecretId=secret_id)
        except Exception as error:  # botocore's ClientError names the code, never the value
            code = getattr(error, "response", {}).get("Error", {}).get("Code", type(error).__name__)
            raise UpstashCredentialsError(
                f"cannot read the Upstash credentials from the Secrets Manager secret "
                f"{secret_id!r} named by {SECRET_ID_SETTING}: {code}"
            ) from None
        try:
            payload = json.loads(response.get("SecretString") or "")
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            # The value itself is never echoed: it may be the token pasted as plain text.
            raise UpstashCredentialsError(
                f"the Secrets Manager secret {secret_id!r} ({SECRET_ID_SETTING}) must be a JSON "
                f"object with {URL_SETTING} and {TOKEN_SETTING}"
            )
        return cls.from_values(
            payload.get(URL_SETTING) or payload.get("url"),
            payload.get(TOKEN_SETTING) or payload.get("token"),
            source=f"the Secrets Manager secret {secret_id!r}",
        )

    @classmethod
    def resolve(
        cls,
        *,
        url: str | None = None,
        token: str | None = None,
        secret_id: str | None = None,
        env: Mapping[str, str] | None = None,
        secrets_client: Any = None,
        region: str | None = None,
        secrets_endpoint_url: str | None = None,
    ) -> "UpstashCredentials":
        """At run time: explicit values, else the secret (argument or env), else the env vars."""
        env = os.environ if env is None else env
        if url or token:
            return cls.from_values(url, token, source="the configuration")
        secret_id = secret_id or env.get(SECRET_ID_SETTING)
        if secret_id:
            return cls.from_secrets_manager(
                secret_id, client=secrets_client, region=region, endpoint_url=secrets_endpoint_url
            )
        return cls.from_env(env)


def namespace_path(operation: str, namespace: str) -> str:
    """`/upsert` for the default namespace, `/upsert/{ns}` otherwise (quoted as a path segment)."""
    return f"/{operation}/{quote(namespace, safe='')}" if namespace else f"/{operation}"


class UpstashVectorClient:
    """One Upstash Vector index (a REST URL) and its namespaces."""

    def __init__(
        self,
        credentials: UpstashCredentials,
        *,
        backoff: Backoff | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.credentials = credentials
        self.backoff = backoff or Backoff()
        self._http = httpx.Client(
            base_url=credentials.url,
            headers={"Authorization": f"Bearer {credentials.token}"},
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"UpstashVectorClient(url={self.credentials.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "UpstashVectorClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------

    def call(self, method: str, path: str, payload: Any = None) -> Any:
        """One REST call with bounded retries; returns the unwrapped `result`."""
        operation = f"{method} {path}"
        last_problem = ""
        unreachable = False
        for attempt in range(self.backoff.attempts):
            retry_after: float | None = None
            try:
                response = self._http.request(method, path, json=payload)
            except httpx.TransportError as error:
                last_problem = f"{type(error).__name__}: {error}"
                unreachable = isinstance(error, httpx.ConnectError)
            else:
                unreachable = False
                status = response.status_code
                if status in (401, 403):
                    read_only = " (a read-only token cannot write)" if status == 403 else ""
                    raise UpstashCredentialsError(
                        f"Upstash Vector rejected the credentials ({status}) for {operation} at "
                        f"{self.credentials.url}: check {TOKEN_SETTING}{read_only} and that "
                        f"{URL_SETTING} is this index's REST URL"
                    )
                if status == 429 or status >= 500:
                    last_problem = f"{status} {_error_message(response)}"
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                else:
                    return _unwrap(response, operation)
            if attempt + 1 < self.backoff.attempts:
                waited = self.backoff.wait(attempt, retry_after)
                logger.warning(
                    "Upstash Vector %s failed (%s); retry %d/%d in %.2fs",
                    operation,
                    last_problem,
                    attempt + 1,
                    self.backoff.attempts - 1,
                    waited,
                )
        hint = f" (is {URL_SETTING} right? {self.credentials.url})" if unreachable else ""
        raise UpstashUnavailable(
            f"Upstash Vector {operation} failed {self.backoff.attempts} times, giving up; "
            f"last: {last_problem}{hint}"
        )

    # -- data plane --------------------------------------------------------------------------

    def upsert(self, namespace: str, vectors: Sequence[Mapping[str, Any]]) -> None:
        if len(vectors) > MAX_VECTORS_PER_REQUEST:
            raise ValueError(f"at most {MAX_VECTORS_PER_REQUEST} vectors per upsert")
        if vectors:
            self.call("POST", namespace_path("upsert", namespace), list(vectors))

    def query(self, namespace: str, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        return list(self.call("POST", namespace_path("query", namespace), dict(body)))

    def fetch(
        self,
        namespace: str,
        ids: Sequence[str],
        *,
        include_metadata: bool = True,
        include_data: bool = False,
        include_vectors: bool = False,
    ) -> list[dict[str, Any] | None]:
        body = {
            "ids": list(ids),
            "includeMetadata": include_metadata,
            "includeData": include_data,
            "includeVectors": include_vectors,
        }
        return list(self.call("POST", namespace_path("fetch", namespace), body))

    def range(
        self,
        namespace: str,
        *,
        cursor: str = "0",
        limit: int = MAX_RANGE_PAGE,
        prefix: str | None = None,
        include_metadata: bool = True,
        include_data: bool = False,
        include_vectors: bool = False,
    ) -> tuple[str, list[dict[str, Any]]]:
        body: dict[str, Any] = {
            "cursor": cursor,
            "limit": limit,
            "includeMetadata": include_metadata,
            "includeData": include_data,
            "includeVectors": include_vectors,
        }
        if prefix is not None:
            body["prefix"] = prefix
        result = self.call("POST", namespace_path("range", namespace), body)
        return str(result.get("nextCursor") or ""), list(result.get("vectors") or [])

    def scan(
        self,
        namespace: str,
        *,
        prefix: str | None = None,
        page_size: int = MAX_RANGE_PAGE,
        include_metadata: bool = True,
        include_data: bool = False,
        include_vectors: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Every vector (under `prefix`), page by page until the cursor runs out."""
        cursor = "0"
        while True:
            cursor, vectors = self.range(
                namespace,
                cursor=cursor,
                limit=page_size,
                prefix=prefix,
                include_metadata=include_metadata,
                include_data=include_data,
                include_vectors=include_vectors,
            )
            yield from vectors
            if not cursor:
                return

    def delete(
        self,
        namespace: str,
        *,
        ids: Sequence[str] | None = None,
        prefix: str | None = None,
        filter: str | None = None,
    ) -> int:
        """Exactly one of ids, prefix or filter (Upstash takes one criterion per call)."""
        chosen = {
            name: value
            for name, value in (("ids", ids), ("prefix", prefix), ("filter", filter))
            if value is not None
        }
        if len(chosen) != 1:
            raise ValueError("delete takes exactly one of ids, prefix or filter")
        if "ids" in chosen and not chosen["ids"]:
            return 0
        if "prefix" in chosen and not chosen["prefix"]:
            raise ValueError("an empty prefix would delete the whole namespace")
        body = {name: list(value) if name == "ids" else value for name, value in chosen.items()}
        result = self.call("POST", namespace_path("delete", namespace), body)
        return int(result.get("deleted", 0)) if isinstance(result, dict) else 0

    # -- control plane -----------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return dict(self.call("GET", "/info"))

    def list_namespaces(self) -> list[str]:
        return [str(name) for name in self.call("GET", "/list-namespaces")]

    def delete_namespace(self, namespace: str, *, missing_ok: bool = True) -> bool:
        if not namespace:
            raise ValueError("the default namespace cannot be deleted")
        try:
            self.call("DELETE", namespace_path("delete-namespace", namespace))
        except UpstashRequestError as error:
            if missing_ok and error.status in (400, 404) and "not" in error.upstash_message:
                return False
            raise
        return True


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])[:300]
    return response.text[:300]


def _unwrap(response: httpx.Response, operation: str) -> Any:
    try:
        body = response.json()
    except ValueError:
        raise UpstashRequestError(
            response.status_code, f"not JSON: {response.text[:200]!r}", operation
        ) from None
    if response.status_code >= 400 or (isinstance(body, dict) and "error" in body):
        message = str(body.get("error")) if isinstance(body, dict) else response.text[:300]
        status = int(body.get("status", response.status_code)) if isinstance(body, dict) else 0
        raise UpstashRequestError(status or response.status_code, message, operation)
    if not isinstance(body, dict) or "result" not in body:
        raise UpstashRequestError(response.status_code, "answer without a result", operation)
    return body["result"]
