"""Sustained load on `/v1/search` with an index version switch in the middle.

    .venv/bin/python bench/soak.py [--rows 100000] [--clients 64] [--seconds 300] [--chat-clients 2]

Builds the `bench/serve.py` index (`--rows` chunks), starts `python -m serving` on loopback and
`--chat-clients` asking /v1/chat of a local llama.cpp server throughout, measures the unloaded
search latency (one search client beside the chat clients), then runs `--clients` concurrent
search clients for `--seconds` (hybrid and dense searches alternating; a client told 429 waits
its Retry-After) while, half way through, a new index version (a copy of the current one) is
promoted through the alias and, two thirds of the way through, llama.cpp is killed (-9) and
restarted. It
samples the server's resident memory every 5 s and prints one JSON object: answers by status and
error code, transport errors, latency of the answered searches against the unloaded p99, the
index versions answered from, chat outcomes, and memory growth from the first sample after
warm-up to the last. Targets (issue 8): zero 5xx, p99 within 3× the unloaded p99, memory growth
under 10%, no chat failed by the generator's restart; and one caller hammering the API with a
key limited to 60 requests a minute gets no more than its limit answered (the rest 429).
"""

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from llama import MODEL_ALIAS, LlamaServer, llama_server
from serve import (
    TOPICS,
    build_index,
    percentiles,
    serving_process,
    wait_for_resident_copy,
)

from lorechat_pipeline.core.aliases import AliasStore
from lorechat_pipeline.core.embedding import SentenceTransformerEmbedder
from lorechat_pipeline.core.storage import LocalObjectStore
from serving.query_encoder import build_query_embedder
from serving.settings import ServingSettings, hash_api_key

LOAD_KEY, LIMITED_KEY = "soak-load-key", "soak-limited-key"
LIMITED_PER_MINUTE = 60


def authorization(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument(
        "--chat-clients",
        type=int,
        default=2,
        help="clients asking /v1/chat of a local llama.cpp server, restarted (kill -9) two "
        "thirds of the way through (0: no generator)",
    )
    parser.add_argument("--index", help="an index folder to copy and serve instead of building")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="lorechat-soak-"))
    if args.index:
        uri = str(root / "index")
        shutil.copytree(args.index, uri)
    else:
        uri = build_index(root, args.rows, SentenceTransformerEmbedder())
    build_query_embedder(ServingSettings(home=root, query_encoder_dir=root / "query-encoder"))
    queries = [f"steps to follow for {topic} variant {n}" for topic in TOPICS for n in range(9)]
    settings = {
        "LORECHAT_INDEX_URI": uri,
        "LORECHAT_API_KEYS": json.dumps(
            [
                {"name": "load", "sha256": hash_api_key(LOAD_KEY), "requests_per_minute": 10**7},
                {
                    "name": "limited",
                    "sha256": hash_api_key(LIMITED_KEY),
                    "requests_per_minute": LIMITED_PER_MINUTE,
                },
            ]
        ),
        "LORECHAT_QUERY_ENCODER_DIR": str(root / "query-encoder"),
        "LORECHAT_ALIAS_CHECK_SECONDS": "1",
    }
    try:
        with contextlib.ExitStack() as stack:
            generator = None
            if args.chat_clients:
                generator = stack.enter_context(llama_server(root / "llama.log"))
                settings |= {
                    "LORECHAT_GENERATOR": "openai",
                    "LORECHAT_OPENAI_BASE_URL": generator.url,
                    "LORECHAT_OPENAI_MODEL": MODEL_ALIAS,
                    "LORECHAT_GENERATION_MAX_TOKENS": "16",
                }
            url, pid = stack.enter_context(serving_process(settings))
            wait_for_resident_copy(url, key=LOAD_KEY)
            report = soak(
                url, pid, uri, queries, args.clients, args.seconds, generator, args.chat_clients
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"rows": args.rows, **report}, indent=2))


async def search_client(
    host: str,
    port: int,
    queries: list[str],
    first: int,
    stop: threading.Event,
    record: Callable[[int, str, float, bytes, float], float],
) -> None:
    """Searches back to back on one keep-alive connection (raw streams: 64 general-purpose
    clients would take more of the two cores than the server). Dense and hybrid alternate; a
    429 is honoured by waiting its Retry-After."""
    reader, writer = await asyncio.open_connection(host, port)
    number = first
    try:
        while not stop.is_set():
            body = json.dumps(
                {"query": queries[number % len(queries)], "mode": ("dense", "hybrid")[number % 2]}
            ).encode()
            started = time.perf_counter()
            writer.write(
                f"POST /v1/search HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
                f"\r\nAuthorization: Bearer {LOAD_KEY}"
                f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            headers = dict(
                line.decode("latin-1").lower().split(": ", 1)
                for line in head.split(b"\r\n")[1:]
                if b": " in line
            )
            answer = await reader.readexactly(int(headers["content-length"]))
            server_ms = float(headers.get("server-timing", "app;dur=0").partition("dur=")[2])
            wait = record(
                int(head[9:12]), headers.get("retry-after", "1"), started, answer, server_ms
            )
            if wait:
                await asyncio.sleep(wait)
            number += 1
    finally:
        writer.close()


def search_load(
    url: str, queries: list[str], clients: int, start_at: float, seconds: float
) -> dict[str, Any]:
    """The search clients, run in a process of their own from `start_at` (epoch seconds) for
    `seconds`: in the soak's process the chat and rate-limit clients' threads would hold the GIL
    while an answer waited to be read, and the client's delay would count as the server's."""
    time.sleep(max(0.0, start_at - time.time()))
    statuses: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    served: list[float] = []
    served_in_server: list[float] = []  # of the same answers, the time the server reports
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()

    def record(
        status: int, retry_after: str, started: float, answer: bytes, server_ms: float
    ) -> float:
        elapsed = time.perf_counter() - started
        if status == 200:
            # Only the version: parsing every answer whole would load the client's cores.
            version = answer.partition(b'"index_version":"')[2].partition(b'"')[0].decode()
            served.append(elapsed)
            served_in_server.append(server_ms / 1000)
            versions[version] += 1
            statuses["200"] += 1
            return 0.0
        statuses[f"{status} {json.loads(answer)['error']['code']}"] += 1
        # As a well-behaved client does: come back when told to.
        return float(retry_after) if status == 429 else 0.0

    host, port = url.removeprefix("http://").split(":")

    async def run() -> None:
        await asyncio.gather(
            *(search_client(host, int(port), queries, n, stop, record) for n in range(clients))
        )

    try:
        asyncio.run(run())
    except Exception as error:  # a dropped connection is a failure the report must show
        statuses[f"transport {type(error).__name__}"] += 1
    timer.cancel()
    return {
        "statuses": statuses,
        "versions": versions,
        "served": served,
        "served_in_server": served_in_server,
    }


def soak(
    url: str,
    pid: int,
    uri: str,
    queries: list[str],
    clients: int,
    seconds: float,
    generator: LlamaServer | None = None,
    chat_clients: int = 0,
) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    chats: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    memory: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    limited: Counter[str] = Counter()
    chat_errors: dict[str, str] = {}

    def abuser() -> None:
        """A caller over its key's rate limit the whole time, ignoring Retry-After."""
        with httpx.Client(base_url=url, timeout=60, headers=authorization(LIMITED_KEY)) as session:
            while not stop.is_set():
                response = session.post("/v1/search", json={"query": "parking", "k": 3})
                outcome = str(response.status_code)
                if response.status_code != 200:
                    outcome += " " + response.json()["error"]["code"]
                with lock:
                    limited[outcome] += 1
                time.sleep(0.05)

    def chat(number: int) -> None:
        with httpx.Client(base_url=url, timeout=120, headers=authorization(LOAD_KEY)) as session:
            while not stop.is_set():
                question = f"who do I contact about {TOPICS[number % len(TOPICS)]}?"
                body = {"messages": [{"role": "user", "content": question}], "k": 2}
                try:
                    response = session.post("/v1/chat", json=body)
                    outcome = str(response.status_code)
                    if response.status_code != 200:
                        error_body = response.json()["error"]
                        outcome += " " + error_body["code"]
                        chat_errors.setdefault(outcome, error_body["message"][:300])
                except httpx.HTTPError as error:
                    outcome = f"transport {type(error).__name__}"
                with lock:
                    chats[outcome] += 1
                number += 1

    def unloaded_latencies() -> list[float]:
        """One search client alone (beside the chat clients, as during the load)."""
        samples = []
        with httpx.Client(base_url=url, timeout=30, headers=authorization(LOAD_KEY)) as session:
            for number in range(200):
                started = time.perf_counter()
                body = {
                    "query": queries[number % len(queries)],
                    "mode": ("dense", "hybrid")[number % 2],
                }
                session.post("/v1/search", json=body).raise_for_status()
                samples.append(time.perf_counter() - started)
        return samples

    # The chat clients run throughout, the unloaded measurement included: on this machine the
    # local generator shares the cores with the server (a hosted one would not), and the ratio
    # is to show what the search load costs, not what the generator does.
    chatters = [threading.Thread(target=chat, args=(n,)) for n in range(chat_clients)]
    for thread in chatters:
        thread.start()
    if chatters:
        time.sleep(2)
    try:
        unloaded = unloaded_latencies()
    except Exception:
        stop.set()
        raise
    spawn = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(1, mp_context=spawn)
    start_at = time.time() + 15  # the client process starts and imports meanwhile
    load = pool.submit(search_load, url, queries, clients, start_at, seconds)
    time.sleep(max(0.0, start_at - time.time()))
    threads = [threading.Thread(target=abuser)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    threads += chatters
    aliases = AliasStore(LocalObjectStore(uri))
    switched = False
    generator_down_seconds: float | str | None = None
    try:
        while time.monotonic() - started < seconds:
            time.sleep(5)
            memory.append(resident_mb(pid))
            elapsed = time.monotonic() - started
            if not switched and elapsed >= seconds / 2:
                current = aliases.current_table() or ""
                shutil.copytree(Path(uri) / f"{current}.lance", Path(uri) / f"{current}_next.lance")
                aliases.promote(f"{current}_next", reason="soak benchmark")
                switched = True
            restart_due = elapsed >= seconds * 2 / 3
            if generator is not None and generator_down_seconds is None and restart_due:
                try:
                    generator_down_seconds = round(generator.restart(), 1)
                except (TimeoutError, RuntimeError) as error:  # reported, the soak goes on
                    generator_down_seconds = f"did not come back: {str(error)[-300:]}"
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    searched = load.result()
    pool.shutdown()
    statuses.update(searched["statuses"])
    versions.update(searched["versions"])
    served, served_in_server = searched["served"], searched["served_in_server"]
    unloaded_p = percentiles(unloaded)
    served_p = percentiles(served)
    # The first samples include warm-up (caches, the thread pool growing to the clients).
    baseline = memory[min(2, len(memory) - 1)]
    return {
        "clients": clients,
        "seconds": seconds,
        "answers": dict(statuses),
        "server_errors": sum(n for status, n in statuses.items() if status.startswith("5")),
        "requests_per_second": round(statuses["200"] / seconds, 1),
        "unloaded": unloaded_p,
        "answered": served_p,
        "answered_time_in_server": percentiles(served_in_server),
        "p99_over_unloaded_p99": round(served_p["p99_ms"] / unloaded_p["p99_ms"], 2),
        "versions_answered_from": dict(versions),
        # A full bucket to start with, then the key's rate: no more may be answered.
        "rate_limited_key": {
            "answers": dict(limited),
            "allowed_at_most": int(LIMITED_PER_MINUTE * (1 + seconds / 60)) + 1,
        },
        "chat_clients": chat_clients,
        "chat_answers": dict(chats),
        "chat_errors": chat_errors,
        "generator_restart_seconds": generator_down_seconds,
        "rss_mb": {"after_warm_up": round(baseline, 1), "end": round(memory[-1], 1)},
        "rss_growth_percent": round(100 * (memory[-1] - baseline) / baseline, 1),
        "rss_mb_every_5s": [round(sample) for sample in memory],
    }


if __name__ == "__main__":
    main()
