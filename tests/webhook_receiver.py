"""A real loopback HTTP receiver for webhook tests: it records every POST it is sent.

Modes: ``ok`` (200 "ok"), ``error`` (500 with a body), ``echo`` (500 answering the request's
path and query back, as a careless receiver might), ``slow`` (sleeps ``delay`` seconds before
answering 200) and ``redirect`` (302 elsewhere). :func:`down_url` is a port nobody listens on.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Receiver:
    mode: str = "ok"
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", errors="replace")
                receiver.requests.append(Received(self.path, dict(self.headers), body))
                if receiver.mode == "slow":
                    time.sleep(receiver.delay)
                status, answer, extra = {
                    "ok": (200, "ok", {}),
                    "slow": (200, "ok", {}),
                    "error": (500, "boom: receiver broke", {}),
                    "echo": (500, f"no such hook: {self.path}", {}),
                    "redirect": (302, "", {"Location": "http://127.0.0.1:9/elsewhere"}),
                }[receiver.mode]
                data = answer.encode()
                try:
                    self.send_response(status)
                    for name, value in extra.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout): what a slow receiver is for

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def down_url() -> str:
    """The base URL of a loopback port that was free a moment ago: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
