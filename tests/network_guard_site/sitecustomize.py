"""The network guard for the processes a guarded script starts (an encoder process, parser
workers): on `PYTHONPATH` only in `tests.network_guard.run_guarded`, it records each attempt
to reach the network as a JSON line in $NETWORK_GUARD_LOG and makes it fail. The script's own
process has its guard in NETWORK_GUARD and is left alone here ($NETWORK_GUARD_ROOT is its pid)."""

import json
import os
import sys
import urllib.request

NETWORK_EVENTS = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "urllib.Request"}
LOG = os.environ.get("NETWORK_GUARD_LOG")
ROOT = os.environ.get("NETWORK_GUARD_ROOT")


def _record(event: str, args: object) -> None:
    assert LOG is not None
    with open(LOG, "a", encoding="utf-8") as log:
        log.write(json.dumps([os.getpid(), event, repr(args)[:200]]) + "\n")


def _audit(event: str, args: object) -> None:
    if event in NETWORK_EVENTS:
        _record(event, args)
        raise ConnectionRefusedError(f"no network in this test ({event})")


def _urlopen(*args: object, **kwargs: object) -> object:
    _record("urllib.request.urlopen", args)
    raise ConnectionRefusedError("no network in this test (urlopen)")


if LOG and ROOT and str(os.getpid()) != ROOT:
    sys.addaudithook(_audit)
    urllib.request.urlopen = _urlopen  # type: ignore[assignment]
