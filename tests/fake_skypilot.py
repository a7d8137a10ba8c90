"""A SkyPilot API server double for ``responses``, speaking the protocol of
``../shared/docs/skypilot-api.md``: submit -> X-Skypilot-Request-ID -> /api/status -> /api/get with a
double-encoded ``return_value``. Used by the syncer tests and the benchmark.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import responses

ENDPOINT = "http://skypilot.test:46580"
ACTIVE = {"PENDING", "SUBMITTED", "STARTING", "RUNNING", "WINDING_DOWN", "RECOVERING", "CANCELLING"}


def job_record(
    job_id: int, name: str | None = "exp", status: str = "RUNNING", **extra: Any
) -> dict:
    """A record shaped like the real /jobs/queue/v2 answer (SkyPilot 0.14.1)."""
    record = {
        "job_id": job_id,
        "task_id": 0,
        "job_name": name,
        "task_name": name,
        "status": status,
        "resources": "2x[H100:8]",
        "infra": "AWS (us-east-1)",
        "cloud": "AWS",
        "region": "us-east-1",
        "submitted_at": 1_760_000_000.0 + job_id,
        "start_at": 1_760_000_100.0 + job_id,
        "end_at": None if status in ACTIVE else 1_760_003_700.0 + job_id,
        "job_duration": 3600.0,
        "recovery_count": 0,
        "failure_reason": None,
        "details": None,
        "user_name": "alice",
        "user_hash": "abcd1234",
        "workspace": "default",
        "entrypoint": "sky jobs launch",
        "metadata": {},
        "user_yaml": f"name: {name}\nrun: |\n  uv run ./tools/run.py run={name}\nenvs:\n  SKYDECK_GIT_REF: main\n",
    }
    record.update(extra)
    return record


class FakeSkyPilot:
    """Serves ``self.jobs`` through the asynchronous request protocol."""

    def __init__(self, rsps: responses.RequestsMock, endpoint: str = ENDPOINT) -> None:
        self.endpoint = endpoint
        self.rsps = rsps
        self.jobs: list[dict] = []
        self.results: dict[str, tuple[int, dict]] = {}
        self.queue_bodies: list[dict] = []
        self.launch_bodies: list[dict] = []
        self.cancel_bodies: list[dict] = []
        self.queue_error: dict | None = None  # {"type": ..., "message": ...} fails the next queues
        self.launch_error: dict | None = None  # {"type": ..., "message": ...} fails launches
        self.truncate_page: int | None = None  # this queue page answers with broken JSON
        self.next_job_id = 1000
        self.logs_bodies: list[dict] = []
        # what POST /jobs/logs streams: plain text with colours and control payload lines
        self.log_text = (
            "\x1b[1mStarting job\x1b[0m\n"
            '<sky-payload type="rich_status">{"msg": "Waiting"}</sky-payload>\n'
            "epoch 1 loss=0.5\n"
        )
        self.log_exit_code = 0  # what /api/get answers for a log request (0: the job succeeded)
        rsps.add_callback(responses.POST, f"{endpoint}/jobs/queue/v2", callback=self._queue)
        rsps.add_callback(responses.POST, f"{endpoint}/jobs/launch", callback=self._launch)
        rsps.add_callback(responses.POST, f"{endpoint}/jobs/cancel", callback=self._cancel)
        rsps.add_callback(responses.POST, f"{endpoint}/jobs/logs", callback=self._logs)
        rsps.add_callback(responses.GET, f"{endpoint}/api/status", callback=self._status)
        rsps.add_callback(responses.GET, f"{endpoint}/api/get", callback=self._get)

    # --- request bookkeeping ---
    def _accept(self, status: int, payload: dict) -> tuple[int, dict, str]:
        request_id = str(uuid.uuid4())
        self.results[request_id] = (status, payload)
        return 200, {"X-Skypilot-Request-ID": request_id}, "null"

    def _succeed(self, value: Any) -> tuple[int, dict, str]:
        return self._accept(200, {"status": "SUCCEEDED", "return_value": json.dumps(value)})

    def _fail(self, error_type: str, message: str) -> tuple[int, dict, str]:
        error = json.dumps({"type": error_type, "message": message, "object": "gASV..."})
        return self._accept(500, {"detail": {"status": "FAILED", "error": error}})

    def _status(self, request):
        ids = parse_qs(urlsplit(request.url).query).get("request_ids", [])
        body = [
            {"request_id": rid, "status": "FAILED" if self.results[rid][0] == 500 else "SUCCEEDED"}
            for rid in ids
            if rid in self.results
        ]
        return 200, {}, json.dumps(body)

    def _get(self, request):
        rid = parse_qs(urlsplit(request.url).query)["request_id"][0]
        if rid not in self.results:
            return 404, {}, json.dumps({"detail": f"Request {rid} not found"})
        status, payload = self.results[rid]
        payload = {"request_id": rid, **payload}
        if status == 500:
            return 500, {}, json.dumps({"detail": {"request_id": rid, **payload["detail"]}})
        return 200, {}, json.dumps(payload)

    # --- operations ---
    def _queue(self, request):
        body = json.loads(request.body)
        self.queue_bodies.append(body)
        if self.queue_error:
            return self._fail(self.queue_error["type"], self.queue_error["message"])
        if self.truncate_page is not None and body.get("page") == self.truncate_page:
            request_id = str(uuid.uuid4())
            self.results[request_id] = (
                200,
                {"status": "SUCCEEDED", "return_value": '{"jobs": [{"job'},
            )
            return 200, {"X-Skypilot-Request-ID": request_id}, "null"
        rows = list(self.jobs)
        if body.get("skip_finished"):
            unfinished = {r["job_id"] for r in rows if r["status"] in ACTIVE}
            rows = [r for r in rows if r["job_id"] in unfinished]
        if body.get("job_ids") is not None:
            wanted = set(body["job_ids"])
            rows = [r for r in rows if r["job_id"] in wanted]
        if body.get("submitted_after") is not None:
            rows = [r for r in rows if (r.get("submitted_at") or 0) >= body["submitted_after"]]
        rows.sort(key=lambda r: (-r["job_id"], r.get("task_id") or 0))
        job_ids = list(dict.fromkeys(r["job_id"] for r in rows))
        total = len(job_ids)
        if body.get("limit"):
            page = body.get("page") or 1
            keep = set(job_ids[(page - 1) * body["limit"] : page * body["limit"]])
            rows = [r for r in rows if r["job_id"] in keep]
        if body.get("fields"):
            rows = [{k: r[k] for k in body["fields"] if k in r} for r in rows]
        return self._succeed(
            {
                "jobs": rows,
                "total": total,
                "total_no_filter": len({r["job_id"] for r in self.jobs}),
                "status_counts": {},
                "infra_options": [],
            }
        )

    def _launch(self, request):
        body = json.loads(request.body)
        self.launch_bodies.append(body)
        if self.launch_error:
            return self._fail(self.launch_error["type"], self.launch_error["message"])
        job_id = self.next_job_id
        self.next_job_id += 1
        return self._succeed({"job_id": [job_id], "handle": "ignored"})

    def _cancel(self, request):
        self.cancel_bodies.append(json.loads(request.body))
        return self._succeed(None)

    def _logs(self, request):
        """The log streams in the answer itself; its request's result is the exit code."""
        self.logs_bodies.append(json.loads(request.body))
        request_id = str(uuid.uuid4())
        result = {"status": "SUCCEEDED", "return_value": json.dumps(self.log_exit_code)}
        self.results[request_id] = (200, result)
        headers = {"X-Skypilot-Request-ID": request_id, "Content-Type": "text/plain"}
        return 200, headers, self.log_text
