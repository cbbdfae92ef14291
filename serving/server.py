"""Start uvicorn on the configured host and port, after refusing an unsafe binding."""

import argparse

import uvicorn

from serving.app import create_app
from serving.observability import configure_logging
from serving.settings import ServingSettings, require_safe_binding


def serve(
    host: str | None = None, port: int | None = None, settings: ServingSettings | None = None
) -> None:
    settings = settings or ServingSettings()
    host = host or settings.serve_host
    require_safe_binding(settings, host)
    configure_logging()
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port or settings.serve_port,
        # Named, not left to uvicorn's auto-detection, so a missing package fails loudly
        # instead of silently serving on the slower pure-Python loop and parser.
        loop="uvloop",
        http="httptools",
        log_config=None,  # our JSON logging
        access_log=False,  # the app logs each request once, with its request id
        proxy_headers=True,
        forwarded_allow_ips="*" if host not in ("127.0.0.1", "localhost", "::1") else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="LoreChat search and chat API")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args()
    serve(args.host, args.port)
