"""Structured JSON logs with request ids, and Prometheus metrics."""

import json
import logging
import sys
import time
from contextvars import ContextVar
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        for name in ("method", "path", "status", "duration_ms", "client", "key"):
            value = getattr(record, name, None)
            if value is not None:
                payload[name] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = name != "uvicorn.access"  # our middleware logs each request once


class Metrics:
    """The app's metrics. With several worker processes (`shared_folder`), every process
    writes its values there and a scrape of any one of them reports the sum over all."""

    def __init__(self, shared_folder: Path | None = None) -> None:
        if shared_folder is not None and values.ValueClass is values.MutexValue:
            # prometheus_client picks where values live when it is first imported.
            raise RuntimeError(
                "metrics shared by worker processes need PROMETHEUS_MULTIPROC_DIR set before "
                "the process starts"
            )
        self.shared_folder = shared_folder
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lorechat_http_requests",
            "HTTP requests",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lorechat_http_request_seconds",
            "HTTP request latency",
            ["route", "method"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12),
            registry=self.registry,
        )
        self.index_rows = Gauge(
            "lorechat_index_chunks",
            "Chunks in the served index version",
            registry=self.registry,
            multiprocess_mode="mostrecent",  # the workers serve the same version
        )
        self.rate_limited = Counter(
            "lorechat_rate_limited", "Requests refused by the rate limiter", registry=self.registry
        )
        self.overloaded = Counter(
            "lorechat_overloaded",
            "Searches turned away because the server was at capacity",
            registry=self.registry,
        )
        # Where searches were answered: "memory" (the served version's copy, on the event
        # loop) or "vector_store" (LanceDB or Upstash, on a worker thread: metadata filters,
        # no copy yet, or a scope the copy's probed lists cannot fill).
        self.searches = Counter(
            "lorechat_searches",
            "Searches by where they were answered",
            ["answered_by"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        if self.shared_folder is None:
            return generate_latest(self.registry)
        every_process = CollectorRegistry()
        MultiProcessCollector(every_process, path=str(self.shared_folder))
        return generate_latest(every_process)
