"""Real loopback HTTP stubs for the crash, fault and load proofs.

* :class:`StubSkyPilot` serves the SkyPilot API server's request-id protocol over real HTTP
  (``ThreadingHTTPServer`` on 127.0.0.1). It does not re-implement the protocol: it drives
  :class:`fake_skypilot.FakeSkyPilot` (the ``responses`` double the unit tests use) through a small
  router, so both doubles answer identically. On top it adds what only a real socket can show:
  thousands of jobs whose statuses move on over time, launches that create jobs, and fault modes
  (``down`` = the port is closed, ``slow`` = every answer waits, ``garbage`` = 200 with non-JSON
  bodies, ``wrong-shape`` = valid JSON of the wrong shape).
* :class:`S3FaultProxy` sits in front of a moto S3 server and can answer every request with
  ``503 SlowDown`` (throttling) or stop listening (down).

As a subprocess (the load bench)::

    python tests/stub_skypilot.py --jobs 3000 --port 46581 [--tick 2]

``POST /_stub/mode {"mode": "slow", "seconds": 30}`` switches the fault mode of a running stub and
``GET /_stub/jobs`` lists ``{"job_ids": [...], "total": N, "statuses": {id: status}}``;
``GET /_stub/events`` the record of launches and cancels below (each launch with the SkyDeck node
that sent it); ``POST /_stub/hold {"what": "launch" | "queue", "count": 1, "name": ..., "node": ...,
"seconds": 60}`` holds the answers to the next launches (of that job name) or managed-jobs queue
requests (a sync's listing) from that node (any node without ``node``), ``GET /_stub/held`` says
what was held (``{"held": N, "launch": [nodes], "queue": [nodes], "waiting": n}``) and
``POST /_stub/release`` answers them all (the nodes proof's kill mid-launch and mid-sync);
``POST /_stub/ticks {"paused": true}`` stops the job history moving on (false: it moves again). The node
of a request is read from SkyDeck's User-Agent (``skydeck/<version> (node <id>)``).

For the team chaos test the stub also keeps its own record of what it was asked (``events``: every
launch and cancel request in arrival order, with the jobs of that name active at that moment, and
the test's own notes in the same sequence), lets other users submit jobs "from the CLI"
(:meth:`StubSkyPilot.add_job`), and can *hold* launch requests (:meth:`StubSkyPilot.hold_launches`):
the job is created when the request arrives, but the answer waits until released — the window in
which a worker can be killed between "submitted" and "listed".
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_skypilot import ACTIVE, FakeSkyPilot, job_record

MODES = ("ok", "slow", "garbage", "wrong-shape")
#: Status a job moves to on each tick (launched and seeded active jobs finish after a few ticks).
NEXT_STATUS = {
    "PENDING": "STARTING",
    "SUBMITTED": "STARTING",
    "STARTING": "RUNNING",
    "RUNNING": "SUCCEEDED",
    "RECOVERING": "RUNNING",
    "WINDING_DOWN": "SUCCEEDED",
    "CANCELLING": "CANCELLED",
}
_NAME_RE = re.compile(r"^name:\s*(\S+)\s*$", re.MULTILINE)
_NODE_RE = re.compile(r"\(node ([^)\s]+)\)")
_LAUNCH_ID_RE = re.compile(r"^\s+SKYDECK_LAUNCH_ID:\s*['\"]?([0-9a-f]+)['\"]?\s*$", re.MULTILINE)
#: A held launch answers at the latest after this long, so a forgotten release never hangs a test.
HOLD_MAX_SECONDS = 60.0

Callback = Callable[[Any], tuple[int, dict, str]]


class _Router:
    """Collects the callbacks FakeSkyPilot registers with ``responses`` (method, path) -> callback."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Callback] = {}

    def add_callback(self, method: str, url: str, callback: Callback) -> None:
        self.routes[(method, urlsplit(url).path)] = callback


class _Request:
    """The two attributes FakeSkyPilot's callbacks read from a ``responses`` request."""

    def __init__(self, url: str, body: bytes) -> None:
        self.url = url
        self.body = body


class StubSkyPilot:
    """A SkyPilot API server on loopback: FakeSkyPilot's answers over real HTTP, plus faults."""

    def __init__(self, jobs: int = 0, *, port: int = 0, experiments: int = 100) -> None:
        self._router = _Router()
        self.fake = FakeSkyPilot(self._router, endpoint="http://stub")  # type: ignore[arg-type]
        self.lock = threading.Lock()
        self.mode = "ok"
        self.slow_seconds = 0.0
        self.requests = 0
        now = time.time()
        self.fake.jobs = [
            job_record(
                i,
                f"exp-{i % experiments:04}",
                "RUNNING" if i > jobs - max(1, jobs // 50) else "SUCCEEDED",
                submitted_at=now - (jobs - i) * 60.0,
            )
            for i in range(1, jobs + 1)
        ]
        self.fake.next_job_id = jobs + 1
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._stop_ticking = threading.Event()
        self.ticks_paused = False  # POST /_stub/ticks {"paused": true}: the history stands still
        # the record of requests (see the module docstring) and the launch hold
        self.events: list[dict] = []
        self.held = 0  # requests held so far (cumulative)
        self.held_log: list[dict] = []  # each held request: what, node, name
        self._holds: list[dict] = []  # the armed holds: what, name, node, left, event, seconds
        self._waiting = 0  # held answers not sent yet
        self._hold_cond = threading.Condition()

    # --- lifecycle ---
    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> StubSkyPilot:
        """Listen (again, on the same port after :meth:`stop`) and serve in a daemon thread."""
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket: clients now get "connection refused" (the *down* fault)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._stop_ticking.set()

    def __enter__(self) -> StubSkyPilot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_mode(self, mode: str, seconds: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: choose from {', '.join(MODES)}")
        self.mode, self.slow_seconds = mode, float(seconds)

    # --- job history moving on ---
    def job_ids(self) -> list[int]:
        with self.lock:
            return sorted({r["job_id"] for r in self.fake.jobs})

    def advance(self, moves: int = 20, new_jobs: int = 2) -> None:
        """Move up to ``moves`` active jobs one status on and submit ``new_jobs`` new ones."""
        with self.lock:
            jobs = self.fake.jobs
            active = [i for i, r in enumerate(jobs) if r["status"] in ACTIVE]
            for index in active[:moves]:
                record = jobs[index]
                status = NEXT_STATUS.get(record["status"], "SUCCEEDED")
                # replace, never mutate: a handler thread may be encoding the old record
                jobs[index] = {
                    **record,
                    "status": status,
                    "end_at": None if status in ACTIVE else time.time(),
                    "job_duration": record["job_duration"] + 30,
                }
            for _ in range(new_jobs):
                job_id = self.fake.next_job_id
                self.fake.next_job_id += 1
                name = f"exp-{random.randrange(100):04}"
                jobs.append(job_record(job_id, name, "PENDING", submitted_at=time.time()))

    def start_ticking(self, every: float) -> None:
        """Advance the history every ``every`` seconds (statuses change while syncs run)."""

        def tick() -> None:
            while not self._stop_ticking.wait(every):
                if not self.ticks_paused:
                    self.advance()

        self._ticker = threading.Thread(target=tick, daemon=True)
        self._ticker.start()

    # --- answering ---
    def answer(
        self, method: str, path: str, query: str, body: bytes, node: str = ""
    ) -> tuple[int, dict, bytes]:
        """One HTTP exchange: (status, headers, body); ``node``: the SkyDeck node asking."""
        self.requests += 1
        if self.mode == "slow":
            time.sleep(self.slow_seconds)
        if path == "/_stub/mode" and method == "POST":
            data = json.loads(body or b"{}")
            self.set_mode(data.get("mode", "ok"), data.get("seconds", 0))
            return 200, {}, b'{"ok": true}'
        if path == "/_stub/jobs":
            with self.lock:
                statuses = {r["job_id"]: r["status"] for r in self.fake.jobs}
            ids = sorted(statuses)
            payload = {"job_ids": ids, "total": len(ids), "statuses": statuses}
            return 200, {}, json.dumps(payload).encode()
        if path == "/_stub/hold" and method == "POST":  # hold the next launch or queue answers
            data = json.loads(body or b"{}")
            what = data.get("what", "launch")
            if what not in ("launch", "queue"):
                return 400, {}, json.dumps({"detail": f"cannot hold {what!r}"}).encode()
            self.hold(
                what,
                data.get("count", 1),
                name=data.get("name"),
                node=data.get("node"),
                seconds=data.get("seconds", HOLD_MAX_SECONDS),
            )
            return 200, {}, b'{"ok": true}'
        if path == "/_stub/ticks" and method == "POST":  # stop (or resume) the history moving on
            self.ticks_paused = bool(json.loads(body or b"{}").get("paused"))
            return 200, {}, json.dumps({"paused": self.ticks_paused}).encode()
        if path == "/_stub/release" and method == "POST":
            self.release_launches()
            return 200, {}, b'{"ok": true}'
        if path == "/_stub/held":
            return 200, {}, json.dumps(self.held_report()).encode()
        if path == "/_stub/events":  # the record of launches and cancels (the nodes proof)
            with self.lock:
                events = list(self.events)
            return 200, {}, json.dumps({"events": events}).encode()
        if self.mode == "garbage":
            headers = {"X-Skypilot-Request-ID": "garbage-0000"} if method == "POST" else {}
            return 200, {"Content-Type": "text/html", **headers}, b"<html>502 upstream oops"
        if path == "/api/health":
            return 200, {}, b'{"status": "healthy", "api_version": "62", "version": "0.14.1"}'
        callback = self._router.routes.get((method, path))
        if callback is None:
            return 404, {}, json.dumps({"detail": "Not Found"}).encode()
        release = None
        if path == "/jobs/queue/v2":  # a sync's listing: its answer waits before it is made
            queued = self._take_hold("queue", node=node)
            if queued is not None:
                self._wait_release(*queued)
        with self.lock:
            if path == "/jobs/launch":
                name = self._record_launch(body, node)
                release = self._take_hold("launch", name, node)
            elif path == "/jobs/cancel":
                self._record_cancel(body)
            status, headers, text = self._router_call(callback, path, query, body)
        if release is not None:  # the job exists; its answer waits (outside the lock)
            self._wait_release(*release)
        if self.mode == "wrong-shape" and path == "/api/get" and status == 200:
            data = json.loads(text)
            data["return_value"] = json.dumps({"jobs": "not a list", "total": "many"})
            text = json.dumps(data)
        return status, headers, text.encode()

    def _router_call(
        self, callback: Callback, path: str, query: str, body: bytes
    ) -> tuple[int, dict, str]:
        url = f"http://stub{path}" + (f"?{query}" if query else "")
        return callback(_Request(url, body))

    def _record_launch(self, body: bytes, node: str = "") -> str | None:
        """A launch creates a PENDING job with the task's name (FakeSkyPilot only hands out ids);
        returns that name."""
        task = json.loads(body).get("task") or ""
        match = _NAME_RE.search(task)
        name = match.group(1) if match else None
        job_id = self.fake.next_job_id  # FakeSkyPilot._launch returns this id next
        token = _LAUNCH_ID_RE.search(task)
        self._event(
            "launch",
            name=name,
            job_id=job_id,
            token=token.group(1) if token else None,
            active=self._active_named(name),
            node=node or None,
        )
        self.fake.jobs.append(
            job_record(job_id, name, "PENDING", submitted_at=time.time(), user_yaml=task)
        )
        return name

    def _record_cancel(self, body: bytes) -> None:
        wanted = set(json.loads(body).get("job_ids") or [])
        jobs = self.fake.jobs
        self._event(
            "cancel",
            job_ids=sorted(wanted),
            jobs=[self._describe(r) for r in jobs if r["job_id"] in wanted],
        )
        for index, record in enumerate(jobs):
            if record["job_id"] in wanted and record["status"] in ACTIVE:
                jobs[index] = {**record, "status": "CANCELLING"}

    # --- the record of requests, other users' jobs, held launches (the team chaos test) ---
    def _event(self, kind: str, **data: Any) -> dict:
        """Append to ``events`` (callers hold ``self.lock``)."""
        event = {"seq": len(self.events), "kind": kind, "at": time.time(), **data}
        self.events.append(event)
        return event

    def note(self, kind: str, **data: Any) -> dict:
        """Put the test's own event (a person's Start, Stop, ...) in the same sequence."""
        with self.lock:
            return self._event(kind, **data)

    @staticmethod
    def _describe(record: dict) -> dict:
        token = _LAUNCH_ID_RE.search(record.get("user_yaml") or "")
        return {
            "job_id": record["job_id"],
            "name": record["job_name"],
            "user_name": record["user_name"],
            "status": record["status"],
            "token": token.group(1) if token else None,
        }

    def _active_named(self, name: str | None) -> list[dict]:
        return [
            self._describe(r)
            for r in self.fake.jobs
            if r["job_name"] == name and r["status"] in ACTIVE
        ]

    def add_job(self, name: str, status: str = "RUNNING", user_name: str = "dave") -> int:
        """Someone else submits a job "from the CLI" (no SkyDeck launch id in its YAML)."""
        with self.lock:
            job_id = self.fake.next_job_id
            self.fake.next_job_id += 1
            record = job_record(job_id, name, status, submitted_at=time.time(), user_name=user_name)
            self.fake.jobs.append(record)
            self._event("cli", **self._describe(record))
            return job_id

    def set_status(self, job_id: int, status: str) -> dict:
        """Move one job to ``status`` (it succeeded, failed, its user cancelled it ...)."""
        with self.lock:
            jobs = self.fake.jobs
            index = next(i for i, r in enumerate(jobs) if r["job_id"] == job_id)
            record = jobs[index] = {
                **jobs[index],
                "status": status,
                "end_at": None if status in ACTIVE else time.time(),
            }
            self._event("status", **self._describe(record))
            return record

    def job(self, job_id: int) -> dict:
        with self.lock:
            return self._describe(next(r for r in self.fake.jobs if r["job_id"] == job_id))

    def hold_launches(self, count: int = 1, name: str | None = None) -> None:
        """Hold the answers to the next ``count`` launch requests (of jobs named ``name`` only,
        when given) until :meth:`release_launches`."""
        self.hold("launch", count, name=name)

    def hold(
        self,
        what: str,
        count: int = 1,
        *,
        name: str | None = None,
        node: str | None = None,
        seconds: float = HOLD_MAX_SECONDS,
    ) -> None:
        """Hold the answers to the next ``count`` ``what`` ("launch" or "queue") requests, of
        jobs named ``name`` and from SkyDeck node ``node`` only when given, until released (or
        ``seconds`` passed). A new hold of the same kind replaces one not used up yet."""
        with self._hold_cond:
            self._holds = [h for h in self._holds if h["what"] != what or h["left"] <= 0]
            self._holds.append(
                {
                    "what": what,
                    "name": name,
                    "node": node,
                    "left": count,
                    "seconds": float(seconds),
                    "event": threading.Event(),
                }
            )

    def _take_hold(
        self, what: str, name: str | None = None, node: str = ""
    ) -> tuple[threading.Event, float] | None:
        with self._hold_cond:
            for hold in self._holds:
                if hold["what"] != what or hold["left"] <= 0:
                    continue
                if hold["name"] not in (None, name) or hold["node"] not in (None, node):
                    continue
                hold["left"] -= 1
                self.held += 1
                self._waiting += 1
                self.held_log.append({"what": what, "node": node or None, "name": name})
                self._hold_cond.notify_all()
                return hold["event"], hold["seconds"]
            return None

    def _wait_release(self, event: threading.Event, seconds: float) -> None:
        event.wait(seconds)
        with self._hold_cond:
            self._waiting -= 1

    def held_report(self) -> dict[str, Any]:
        """What was held: the total, the nodes of held launches and listings, how many wait."""
        with self._hold_cond:
            return {
                "held": self.held,
                "launch": [h["node"] for h in self.held_log if h["what"] == "launch"],
                "queue": [h["node"] for h in self.held_log if h["what"] == "queue"],
                "waiting": self._waiting,
            }

    def wait_held(self, count: int = 1, timeout: float = 30.0) -> None:
        """Until ``count`` requests in all have been held."""
        with self._hold_cond:
            if not self._hold_cond.wait_for(lambda: self.held >= count, timeout):
                raise AssertionError(f"no held launch request within {timeout} s")

    def release_launches(self) -> None:
        """Answer every held request now and disarm the holds."""
        with self._hold_cond:
            for hold in self._holds:
                hold["left"] = 0
                hold["event"].set()
            self._holds = []


def _handler_for(stub: StubSkyPilot) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            node = _NODE_RE.search(self.headers.get("User-Agent") or "")
            status, headers, payload = stub.answer(
                self.command, parts.path, parts.query, body, node.group(1) if node else ""
            )
            try:
                self.send_response(status)
                headers.setdefault("Content-Type", "application/json")
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the slow fault): nothing to answer

        do_GET = do_POST = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


# --- S3 ------------------------------------------------------------------------------------------

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>stub</RequestId></Error>"
)


class S3FaultProxy:
    """A loopback HTTP proxy in front of an S3 server: passes through, throttles, or is down."""

    def __init__(self, upstream: str, *, port: int = 0) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.throttle = False
        self.throttled = 0
        self.delay = 0.0  # seconds each passed-through request waits first (a slow S3)
        self._port = port
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> S3FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy.throttle:
                    proxy.throttled += 1
                    status, headers, payload = 503, {"Content-Type": "application/xml"}, SLOW_DOWN
                else:
                    time.sleep(proxy.delay)
                    status, headers, payload = proxy._forward(self, body)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def _forward(self, request: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            skip = {"host", "content-length", "connection", "transfer-encoding"}
            headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
            conn.request(request.command, request.path, body=body or None, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            passed = {
                k: v
                for k, v in response.getheaders()
                if k.lower() not in {"content-length", "connection", "transfer-encoding"}
            }
            return response.status, passed, payload
        finally:
            conn.close()

    def stop(self) -> None:
        """Stop listening: S3 requests now fail with "connection refused" (S3 down)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--experiments", type=int, default=100, help="names exp-0000 ...")
    parser.add_argument("--port", type=int, default=46581)
    parser.add_argument("--tick", type=float, default=2.0, help="seconds between status moves")
    args = parser.parse_args()
    stub = StubSkyPilot(args.jobs, port=args.port, experiments=args.experiments).start()
    if args.tick > 0:
        stub.start_ticking(args.tick)
    print(f"stub SkyPilot API server with {args.jobs} jobs on {stub.endpoint}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        stub.stop()


if __name__ == "__main__":
    main()
