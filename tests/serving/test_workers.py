"""Several server processes on one port (LORECHAT_WORKERS): what they share, and a real
multi-process server on loopback."""

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.auth import RateLimited
from serving.workers import SharedEncoderActivity, SharedRateLimiter
from tests.conftest import REPO_ROOT, free_port
from tests.serving.conftest import BuiltIndex


def _spend(
    path: Path, attempts: int, per_minute: int, granted: "multiprocessing.Queue[int]"
) -> None:
    limiter = SharedRateLimiter(1, path)
    passed = 0
    for _ in range(attempts):
        try:
            limiter.take("kitchen", per_minute)
            passed += 1
        except RateLimited:
            pass
    limiter.close()
    granted.put(passed)


def test_a_callers_limit_holds_across_processes(tmp_path: Path) -> None:
    buckets = tmp_path / "rate-limits"
    SharedRateLimiter.create(buckets)
    context = multiprocessing.get_context("fork")
    granted: multiprocessing.Queue[int] = context.Queue()
    spenders = [context.Process(target=_spend, args=(buckets, 100, 60, granted)) for _ in range(3)]
    for spender in spenders:
        spender.start()
    for spender in spenders:
        spender.join(timeout=60)
    total = sum(granted.get(timeout=10) for _ in spenders)
    # 60 a minute with a burst of 60: three processes of 100 attempts get 60 between them
    # (one more if a second passed meanwhile), not 60 each.
    assert 60 <= total <= 61


def test_callers_have_buckets_of_their_own(tmp_path: Path) -> None:
    buckets = tmp_path / "rate-limits"
    SharedRateLimiter.create(buckets, slots=32)
    limiter = SharedRateLimiter(2, buckets)
    other_worker = SharedRateLimiter(2, buckets)
    try:
        limiter.take("kitchen")
        other_worker.take("kitchen")
        with pytest.raises(RateLimited) as refused:
            limiter.take("kitchen")
        assert refused.value.retry_after >= 1
        # More callers than slots: each still gets its own limit (a full window reuses the
        # stalest slot, never another caller's live one while a fresher slot is free).
        for n in range(40):
            limiter.take(f"caller-{n}")
        limiter.take("garden", per_minute=1)
        with pytest.raises(RateLimited):
            other_worker.take("garden", per_minute=1)
    finally:
        limiter.close()
        other_worker.close()


def test_encoder_activity_is_counted_across_workers(tmp_path: Path) -> None:
    path = tmp_path / "encoder-activity"
    SharedEncoderActivity.create(path)
    first, second = SharedEncoderActivity(path), SharedEncoderActivity(path)
    assert first.begin() == 0  # nothing else running: a lone query may take every core
    assert second.begin() == 1  # the other worker is encoding
    first.end()
    assert second.begin() == 1
    second.end()
    second.end()
    assert first.begin() == 0
    first.end()
    first.close()
    second.close()


def test_a_dead_workers_runs_stop_counting(tmp_path: Path) -> None:
    path = tmp_path / "encoder-activity"
    SharedEncoderActivity.create(path)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(gone.stdout)
    crashed = SharedEncoderActivity(path)
    # As a worker killed mid-run leaves it: its slot says it is encoding, forever.
    with crashed._table.locked() as workers:
        workers[crashed._slot] = (dead_pid, 3)
    restarted = SharedEncoderActivity(path)  # the supervisor's replacement claims the slot
    assert restarted._slot == crashed._slot
    assert restarted.begin() == 0
    restarted.end()
    restarted.close()


@pytest.fixture
def two_workers(
    request: pytest.FixtureRequest, built_index: BuiltIndex, query_encoder_dir: Path, tmp_path: Path
) -> Iterator[str]:
    """`python -m serving` with LORECHAT_WORKERS=2 on loopback, its temporary files in tmp_path;
    the rate limit a minute is the test's parameter (default 1000)."""
    rate_limit = getattr(request, "param", 1000)
    port = free_port()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {
        **os.environ,
        "LORECHAT_HOME": str(built_index.home),
        "LORECHAT_QUERY_ENCODER_DIR": str(query_encoder_dir),
        "LORECHAT_WORKERS": "2",
        "LORECHAT_RATE_LIMIT_PER_MINUTE": str(rate_limit),
        "TMPDIR": str(scratch),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "serving", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the workers did not become ready"
            time.sleep(0.3)
        yield url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
    assert server.returncode == 0
    # The shared state (rate-limit buckets, metrics) goes with the server.
    assert list(scratch.glob("lorechat-workers-*")) == []


def answering_workers(url: str, wanted: int, attempts: int = 25) -> tuple[dict[int, Any], int]:
    """/v1/index from distinct workers (each request on a new connection), and the requests
    it took."""
    seen: dict[int, Any] = {}
    asked = 0
    while asked < attempts and len(seen) < wanted:
        asked += 1
        info = httpx.get(url + "/v1/index", timeout=30).json()
        seen[info["worker_pid"]] = info
        time.sleep(0.05)
    return seen, asked


@pytest.mark.parametrize("two_workers", [30], indirect=True)
def test_workers_share_the_port_the_rate_limit_and_the_metrics(two_workers: str) -> None:
    url = two_workers
    workers, spent = answering_workers(url, 2)  # those requests took tokens too
    assert len(workers) == 2, "one worker answered every connection"
    assert len({info["index_version"] for info in workers.values()}) == 1
    attempts = 0
    answers: dict[int, int] = {}
    while True:
        attempts += 1
        assert attempts <= 100, "the shared limit of 30 a minute never refused a search"
        found = httpx.post(url + "/v1/search", json={"query": "green tea", "k": 3}, timeout=30)
        if found.status_code == 429:
            assert int(found.headers["retry-after"]) >= 1
            break
        assert found.status_code == 200
        assert found.json()["hits"][0]["citation"]["source"] == "kitchen/tea.html"
        answers[200] = answers.get(200, 0) + 1
    # 30 a minute for this caller, whichever worker each connection reached (per-process
    # buckets would have let 60 through); a token may have come back meanwhile.
    assert 30 <= spent + answers[200] <= 32
    # A scrape of any worker counts every worker's requests.
    for _ in range(4):
        text = httpx.get(url + "/metrics", timeout=30).text
        searched = re.search(
            r'lorechat_http_requests_total\{method="POST",route="/v1/search",status="200"\} (\S+)',
            text,
        )
        assert searched is not None
        assert float(searched.group(1)) == answers[200]
        assert "lorechat_rate_limited_total 1.0" in text


def test_a_worker_that_dies_is_replaced(two_workers: str) -> None:
    url = two_workers
    first, _ = answering_workers(url, 2)
    assert len(first) == 2
    victim = next(iter(first))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while True:
        try:
            now, _ = answering_workers(url, 2)
            if len(now) == 2 and victim not in now:
                break
        except httpx.HTTPError:
            pass  # a connection the killed worker had accepted
        assert time.monotonic() < deadline, "the killed worker was not replaced"
        time.sleep(0.5)
    found = httpx.post(url + "/v1/search", json={"query": "green tea"}, timeout=30)
    assert found.status_code == 200
