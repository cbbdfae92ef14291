"""`lorechat serve`: starts the API on the local default index; refuses an open binding."""

import os
import signal
import subprocess
import time

import httpx

from tests.conftest import REPO_ROOT, free_port
from tests.serving.conftest import BuiltIndex

LORECHAT = REPO_ROOT / ".venv" / "bin" / "lorechat"


def test_serve_answers_on_loopback(built_index: BuiltIndex) -> None:
    port = free_port()
    env = {**os.environ, "LORECHAT_HOME": str(built_index.home)}
    process = subprocess.Popen(
        [str(LORECHAT), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "lorechat serve did not become ready"
            time.sleep(0.5)
        hits = httpx.post(
            f"http://127.0.0.1:{port}/v1/search", json={"query": "green tea"}, timeout=30
        ).json()["hits"]
        assert hits[0]["citation"]["source"] == "kitchen/tea.html"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    # One JSON object per log line, with the request id of the search.
    lines = [
        line
        for line in (process.stderr.read().decode() if process.stderr else "").splitlines()
        if line.startswith("{")
    ]
    assert any('"path": "/v1/search"' in line and '"request_id"' in line for line in lines)


def test_serve_refuses_an_open_binding_without_keys(built_index: BuiltIndex) -> None:
    env = {**os.environ, "LORECHAT_HOME": str(built_index.home)}
    result = subprocess.run(
        [str(LORECHAT), "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "without API keys" in result.stderr
