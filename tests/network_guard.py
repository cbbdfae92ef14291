"""The opening of a script run in a fresh interpreter to prove it needs no network: every way out
(sockets, name lookups, urllib) raises and is recorded in `attempts`, which the script reports.
A raise alone is not enough, since some libraries (unstructured's telemetry thread) swallow it."""

NETWORK_GUARD = r"""
import json, os, sys, urllib.request

attempts = []
NETWORK_EVENTS = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "urllib.Request"}

def audit(event, args):
    if event in NETWORK_EVENTS:
        attempts.append([event, repr(args)[:200]])
        raise ConnectionRefusedError(f"no network in this test ({event})")

sys.addaudithook(audit)

def urlopen(*args, **kwargs):
    attempts.append(["urllib.request.urlopen", repr(args)[:200]])
    raise ConnectionRefusedError("no network in this test (urlopen)")

urllib.request.urlopen = urlopen
"""
