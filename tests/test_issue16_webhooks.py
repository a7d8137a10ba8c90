"""Issue 16's acceptance, end to end: a stalled run (found by the log sampler in a job's log
read from the SkyPilot double) and a parked experiment (the reconciler) produce one webhook
each at a real loopback receiver, and later passes add none."""

from __future__ import annotations

from datetime import timedelta
from pydoc import locate

import pytest
import responses
from django.utils import timezone
from django_q.models import OrmQ
from fake_skypilot import ENDPOINT, FakeSkyPilot
from webhook_receiver import Receiver

from experiments.models import JobStatus, NotificationEvent, WebhookDestination
from syncing import notifications, reconciler, sampler

pytestmark = pytest.mark.django_db


def run_queued() -> None:
    for queued in OrmQ.objects.order_by("id"):
        task = queued.task
        queued.delete()
        locate(task["func"])(*task["args"], **task["kwargs"])


def test_a_stalled_run_and_a_parked_experiment_give_one_webhook_each(
    settings, monkeypatch, no_local_skypilot, make_experiment, make_job,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    settings.SKYDECK_SKYPILOT_ENDPOINT = ENDPOINT
    settings.SKYDECK_STALL_MINUTES = 60
    monkeypatch.setattr("syncing.skypilot.pause", lambda s: None)
    receiver = Receiver().start()
    try:
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            rsps.add_passthru(receiver.url)
            sky = FakeSkyPilot(rsps)
            sky.log_text = "step 5/100 | loss 1.25\nstep 5/100 | loss 1.25\n"  # not moving
            WebhookDestination.objects.create(
                name="team",
                url=f"{receiver.url}/hooks/T000/B000/secret",
                events=[NotificationEvent.STALLED, NotificationEvent.PARKED],
                format="json",
            )
            assert notifications.check().startswith("notify: started")
            make_experiment("train-stuck", desired_state="RUNNING")
            long_ago = timezone.now() - timedelta(hours=2)
            make_job(
                41, "train-stuck", status=JobStatus.RUNNING, started_at=long_ago,
                progress={"step": 5, "total": 100, "epoch": None, "metrics": {"loss": 1.25}},
                progress_at=long_ago, progress_advanced_at=long_ago,
            )  # fmt: skip
            broken = make_experiment("train-broken", desired_state="RUNNING")
            for _ in range(2):
                with django_capture_on_commit_callbacks(execute=True):
                    sampler.sample_pass()
                    reconciler.execute(
                        [reconciler.Action("park", broken, reason="FAILED_PRECHECKS: bad config")],
                        client=None,
                    )
                    notifications.check()
                run_queued()
            broken.refresh_from_db()
            assert broken.desired_state == "STOPPED"
        bodies = sorted((r.body["event"], r.body["experiment"]) for r in receiver.requests)
        assert bodies == [("parked", "train-broken"), ("stalled", "train-stuck")]
        stalled = next(r.body for r in receiver.requests if r.body["event"] == "stalled")
        assert "no log progress for 2 h" in stalled["text"]
        assert all("secret" not in str(r.body) for r in receiver.requests)
    finally:
        receiver.stop()
