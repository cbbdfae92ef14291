"""Start uvicorn on the configured host and port, after refusing an unsafe binding."""

import argparse
import sys
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from serving.app import create_app
from serving.observability import configure_logging
from serving.settings import ServingSettings, require_safe_binding
from serving.workers import shared_worker_state


class WorkerStartFailed(RuntimeError):
    pass


def serve(
    host: str | None = None, port: int | None = None, settings: ServingSettings | None = None
) -> None:
    given = settings
    settings = settings or ServingSettings()
    host = host or settings.serve_host
    require_safe_binding(settings, host)
    configure_logging()
    options: dict[str, Any] = {
        "host": host,
        "port": port or settings.serve_port,
        # Named, not left to uvicorn's auto-detection, so a missing package fails loudly
        # instead of silently serving on the slower pure-Python loop and parser.
        "loop": "uvloop",
        "http": "httptools",
        "log_config": None,  # our JSON logging
        "access_log": False,  # the app logs each request once, with its request id
        "proxy_headers": True,
        "forwarded_allow_ips": "*" if host not in ("127.0.0.1", "localhost", "::1") else None,
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **options)
        return
    if given is not None:
        raise ValueError(
            "worker processes read their settings from the environment (LORECHAT_*): "
            "pass none to serve() when LORECHAT_WORKERS > 1"
        )
    serve_in_workers(settings.workers, options)


def serve_in_workers(workers: int, options: dict[str, Any]) -> None:
    """`workers` processes on one listening socket, supervised by this one (uvicorn's
    supervisor: it restarts a worker that dies, and stops everything on SIGTERM or when a
    worker fails to start, as with a manifest that does not match the query encoder)."""
    with shared_worker_state():
        config = uvicorn.Config(
            "serving.app:create_worker_app", factory=True, workers=workers, **options
        )
        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        supervisor.run()
    failed = [each.pid for each in supervisor.processes if each.exitcode == STARTUP_FAILURE]
    if failed:
        # uvicorn's own run() would exit 0 here: a refusal to start must not look like a stop.
        raise WorkerStartFailed(f"worker process {failed[0]} failed to start; see its log above")


def main() -> None:
    parser = argparse.ArgumentParser(description="LoreChat search and chat API")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args()
    try:
        serve(args.host, args.port)
    except WorkerStartFailed as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)
