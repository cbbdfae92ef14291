"""A real index built by the pipeline, served by a real uvicorn server on loopback."""

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from lorechat_pipeline.core.onnx_embedding import export_query_encoder
from lorechat_pipeline.runner import Pipeline
from lorechat_pipeline.settings import load_settings
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import free_port
from tests.pipeline.conftest import HTML, MARKDOWN, TEXT, write
from tests.pipeline.sample_documents import pdf

RADIATORS = [f"Bleed radiator number {n} every autumn to release trapped air." for n in range(14)]
PRESSURE = [
    f"Gauge reading {n}: the boiler pressure should stay between one and two bar."
    for n in range(14)
]
SERVICING = [
    f"Service visit {n}: an engineer checks the boiler flue before winter." for n in range(14)
]


@dataclass
class BuiltIndex:
    home: Path
    source: Path

    def pipeline(self, **overrides: Any) -> Pipeline:
        return Pipeline.from_settings(
            load_settings(home=self.home, source=str(self.source), parse_workers=1, **overrides)
        )


@pytest.fixture(scope="session")
def built_index(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> BuiltIndex:
    root = tmp_path_factory.mktemp("served")
    source = root / "source"
    write(source, "energy/solar.md", MARKDOWN)
    write(source, "energy/solar.md.metadata.json", '{"metadataAttributes": {"team": "facilities"}}')
    write(source, "kitchen/tea.html", HTML)
    write(source, "bikes.txt", TEXT)
    write(
        source,
        "manuals/boiler.pdf",
        # Pages long enough to be chunks of their own, so page filters have something to do.
        pdf(
            [
                ["Boiler manual", *RADIATORS],
                ["Pressure", *PRESSURE],
                ["Servicing", *SERVICING],
            ]
        ),
    )
    built = BuiltIndex(root / "home", source)
    pipeline = built.pipeline()
    pipeline.ingest()
    pipeline.close()
    return built


@dataclass
class RunningServer:
    url: str
    settings: ServingSettings
    server: uvicorn.Server

    def client(self, api_key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


ServerFactory = Callable[..., RunningServer]


@pytest.fixture(scope="session")
def query_encoder_dir(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Path:
    """The ONNX export of the packaged model, made once (what the serving image ships)."""
    folder = tmp_path_factory.mktemp("query-encoder")
    export_query_encoder(folder)
    return folder


@pytest.fixture
def serve(built_index: BuiltIndex, query_encoder_dir: Path) -> Iterator[ServerFactory]:
    """Start the app under uvicorn on a free loopback port (in a thread of this process).

    The app embeds queries as in production: onnxruntime on the export of the model that
    built the index (with torch only when a test passes its own embedder)."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(embedder_override: Any = None, **overrides: Any) -> RunningServer:
        overrides.setdefault("query_encoder_dir", query_encoder_dir)
        overrides.setdefault("alias_check_seconds", 0)  # promotions seen at once
        settings = ServingSettings(home=overrides.pop("home", built_index.home), **overrides)
        port = free_port()
        app = create_app(settings, embedder=embedder_override)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server stopped during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start")
            time.sleep(0.05)
        servers.append((server, thread))
        return RunningServer(f"http://127.0.0.1:{port}", settings, server)

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)
