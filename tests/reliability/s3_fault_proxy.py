"""A real HTTP proxy on loopback in front of moto's S3 server that injects S3's failures.

A rule names a method, a regular expression over the request path and query
(`/bucket/key?list-type=2`), how many matching requests to let through first (`skip`) and how
many to fail (`times`, None: always). Every rule counts every request it matches; the first rule
that is due injects its fault (a rule due on the same request as an earlier one waits for the
next). Rules are switched at runtime (`add`, `clear`); each counts the faults it injected.

Faults, as S3 and the network deliver them:

- `internal_error`: 500 with S3's `InternalError` XML body (the request never reaches moto);
- `slow_down`: 503 with S3's `SlowDown` XML body;
- `reset`: the response's status line, headers and half its body, then a TCP RST (an answer
  without a body, such as HEAD's or PutObject's: the RST alone, the request having been served);
- `truncate`: the full Content-Length, half the body, then a clean close (FIN);
- `empty_listing`, `half_listing`: a ListObjectsV2 answer rewritten to none or half of its keys
  (a well-formed, successful, wrong answer).
"""

import http.client
import re
import socket
import struct
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlparse

FaultKind = Literal[
    "internal_error", "slow_down", "reset", "truncate", "empty_listing", "half_listing"
]

ERRORS: dict[str, tuple[int, str, str]] = {
    "internal_error": (500, "InternalError", "We encountered an internal error. Please try again."),
    "slow_down": (503, "SlowDown", "Please reduce your request rate."),
}
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
}
LIST_OBJECTS_V2 = r"[?&]list-type=2"


@dataclass
class Rule:
    fault: FaultKind
    method: str = "*"  # GET, HEAD, PUT, POST, DELETE or *
    path: str = ".*"  # re.search over "/bucket/key?query"
    skip: int = 0  # matching requests let through before the first fault
    times: int | None = 1  # faults to inject; None: every matching request from then on
    seen: int = 0
    injected: int = 0

    def matches(self, method: str, target: str) -> bool:
        return self.method in ("*", method) and re.search(self.path, target) is not None

    @property
    def armed(self) -> bool:
        return self.seen > self.skip and (self.times is None or self.injected < self.times)


def s3_error_body(code: str, message: str, resource: str) -> bytes:
    request_id = uuid.uuid4().hex[:16].upper()
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{resource}</Resource><RequestId>{request_id}</RequestId>"
        f"<HostId>{uuid.uuid4().hex}</HostId></Error>"
    ).encode()


def rewrite_listing(body: bytes, keep: Literal["none", "half"]) -> bytes:
    text = body.decode("utf-8")
    contents = re.findall(r"<Contents>.*?</Contents>", text, flags=re.DOTALL)
    kept = [] if keep == "none" else contents[: len(contents) // 2]
    for dropped in contents[len(kept) :]:
        text = text.replace(dropped, "", 1)
    text = re.sub(r"<KeyCount>\d+</KeyCount>", f"<KeyCount>{len(kept)}</KeyCount>", text)
    return text.encode("utf-8")


class S3FaultProxy:
    """`with S3FaultProxy(upstream) as proxy:` serves on `proxy.endpoint` until the block ends."""

    def __init__(self, upstream: str) -> None:
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str]] = []  # (method, target) of every request seen
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> "S3FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def add(
        self,
        fault: FaultKind,
        *,
        method: str = "*",
        path: str = ".*",
        skip: int = 0,
        times: int | None = 1,
    ) -> Rule:
        rule = Rule(fault, method, path, skip, times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def fault_for(self, method: str, target: str) -> FaultKind | None:
        with self._lock:
            self.requests.append((method, target))
            due = None
            for rule in self.rules:
                if rule.matches(method, target):
                    rule.seen += 1
                    if due is None and rule.armed:
                        due = rule
            if due is None:
                return None
            due.injected += 1
            return due.fault

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _serve(self) -> None:
                fault = proxy.fault_for(self.command, self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if fault in ERRORS:
                    status, code, message = ERRORS[fault]
                    error = s3_error_body(code, message, self.path.split("?")[0])
                    self._respond(status, [("Content-Type", "application/xml")], error)
                    return
                status, headers, payload = self._forward(body)
                if fault in ("empty_listing", "half_listing") and re.search(
                    LIST_OBJECTS_V2, self.path
                ):
                    payload = rewrite_listing(
                        payload, "none" if fault == "empty_listing" else "half"
                    )
                if fault == "reset":
                    if payload and self.command != "HEAD":  # else: before the status line
                        self._send_head(status, headers, len(payload))
                        self.wfile.write(payload[: len(payload) // 2])
                        self.wfile.flush()
                    # SO_LINGER with a zero timeout: close() sends RST, not FIN.
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    return
                if fault == "truncate":
                    self._send_head(status, headers, len(payload))
                    self.wfile.write(payload[: len(payload) // 2])
                    self.close_connection = True
                    return
                self._respond(status, headers, payload)

            def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                connection = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                try:
                    connection.putrequest(
                        self.command, self.path, skip_host=True, skip_accept_encoding=True
                    )
                    for name, value in self.headers.items():
                        if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                            connection.putheader(name, value)
                    if body or self.command in ("PUT", "POST"):
                        connection.putheader("Content-Length", str(len(body)))
                    connection.endheaders(body or None)
                    response = connection.getresponse()
                    payload = response.read()
                    headers = [
                        (name, value)
                        for name, value in response.getheaders()
                        if name.lower() not in HOP_BY_HOP | {"content-length", "date", "server"}
                    ]
                    if self.command == "HEAD":
                        length = response.getheader("Content-Length")
                        headers.append(("Content-Length", length or "0"))
                    return response.status, headers, payload
                finally:
                    connection.close()

            def _send_head(self, status: int, headers: list[tuple[str, str]], length: int) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(length))
                self.end_headers()

            def _respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                if self.command == "HEAD":
                    # A HEAD answer has no body; an error's length is what the body would be.
                    if not any(name.lower() == "content-length" for name, _ in headers):
                        headers = [*headers, ("Content-Length", str(len(body)))]
                    self._send_head(status, headers, 0)
                    return
                self._send_head(status, headers, len(body))
                self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _serve  # noqa: N815

        return Handler
