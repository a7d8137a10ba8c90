"""django-q2 schedules: created by migrate, idempotent, following the settings."""

from __future__ import annotations

from django.core.management import call_command
from django_q.models import Schedule

from experiments.models import SyncState
from syncing import schedules, tasks


def test_migrate_creates_the_schedules_once(db, settings):
    # the test database was migrated, so the schedules exist already
    names = schedules.ensure_schedules()
    assert set(Schedule.objects.values_list("name", flat=True)) == set(names)
    assert "skydeck: sync SkyPilot jobs and reconcile" in names
    call_command("migrate", verbosity=0)
    schedules.ensure_schedules()
    assert Schedule.objects.count() == len(names)
    sky = Schedule.objects.get(func="syncing.tasks.sync_jobs_and_reconcile")
    assert (sky.schedule_type, sky.cron) == (Schedule.CRON, "* * * * * */30")
    if "skydeck: sync S3 checkpoints" in names:
        s3 = Schedule.objects.get(func="syncing.tasks.sync_s3")
        assert (s3.schedule_type, s3.minutes) == (Schedule.MINUTES, 1)
    assert sky.repeats == -1
    notify = Schedule.objects.get(name=schedules.NOTIFY_SCHEDULE)  # whatever is configured
    assert (notify.func, notify.schedule_type, notify.minutes) == (
        "syncing.tasks.notify",
        Schedule.MINUTES,
        1,
    )


def test_schedules_follow_changed_settings(db, settings):
    settings.SKYDECK_SYNC_SKYPILOT_INTERVAL = 120
    schedules.ensure_schedules()
    sky = Schedule.objects.get(func="syncing.tasks.sync_jobs_and_reconcile")
    assert (sky.schedule_type, sky.minutes) == (Schedule.MINUTES, 2)
    assert Schedule.objects.count() == len(schedules.ensure_schedules())


def test_task_runs_the_same_sync_and_records_it(db, settings, monkeypatch):
    settings.SKYDECK_SKYPILOT_ENDPOINT = "http://127.0.0.1:9"
    settings.SKYDECK_SKYPILOT_TIMEOUT = 0.5
    monkeypatch.setenv("SKYPILOT_API_COOKIE_FILE", "/nonexistent/cookies.txt")
    monkeypatch.setattr("syncing.skypilot.pause", lambda s: None)
    summary = tasks.sync_jobs_and_reconcile()
    assert summary.startswith("skypilot: FAILED")
    assert SyncState.objects.get(source="skypilot").last_error
    assert SyncState.objects.get(source="skypilot").lease_owner == ""


def test_rows_stored_before_the_move_are_renamed_and_their_old_paths_still_run(db, settings):
    """Schedule rows and queued tasks name tasks by dotted path: the old paths keep working."""
    from pydoc import locate

    Schedule.objects.all().delete()
    Schedule.objects.create(
        name="skydeck: sync SkyPilot jobs", func="syncing.tasks.sync_skypilot", repeats=-1
    )
    schedules.ensure_schedules()
    (sky,) = Schedule.objects.filter(name__contains="SkyPilot")
    assert (sky.name, sky.func) == (
        "skydeck: sync SkyPilot jobs and reconcile",
        "syncing.tasks.sync_jobs_and_reconcile",
    )
    # both names existing (a row made by a newer node): the old one goes, none runs twice
    Schedule.objects.create(name="skydeck: sync SkyPilot jobs", func="x", repeats=-1)
    schedules.ensure_schedules()
    assert Schedule.objects.filter(name__contains="SkyPilot").count() == 1
    # what django-q2 resolves for a task queued under an old path
    assert locate("syncing.tasks.sync_skypilot") is tasks.sync_jobs_and_reconcile
    settings.SKYDECK_BACKUP_DIR = None
    assert locate("syncing.tasks.backup_database")() == "backup: off (SKYDECK_BACKUP_DIR is empty)"
    assert locate(schedules.BACKUP_TASK)() == "backup: off (SKYDECK_BACKUP_DIR is empty)"


def test_the_log_sampler_runs_every_sample_interval_when_skypilot_is_a_source(
    db, settings, monkeypatch
):
    from pydoc import locate

    settings.SKYDECK_SAMPLE_INTERVAL = 300
    assert "skydeck: sample job logs" in schedules.ensure_schedules()
    sampler = Schedule.objects.get(name="skydeck: sample job logs")
    assert (sampler.func, sampler.schedule_type, sampler.minutes) == (
        "syncing.tasks.sample_logs",
        Schedule.MINUTES,
        5,
    )
    assert locate(sampler.func) is tasks.sample_logs
    settings.SKYDECK_SAMPLE_INTERVAL = 45
    schedules.ensure_schedules()
    sampler.refresh_from_db()
    assert (sampler.schedule_type, sampler.cron) == (Schedule.CRON, "* * * * * */45")
    # without the SkyPilot source there is nothing to sample: no schedule is made
    Schedule.objects.all().delete()
    monkeypatch.setattr(schedules.runner, "available_sources", lambda: ["s3"])
    assert "skydeck: sample job logs" not in schedules.ensure_schedules()
    assert not Schedule.objects.filter(func="syncing.tasks.sample_logs").exists()
