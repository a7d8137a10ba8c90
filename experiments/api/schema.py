"""Response shapes that exist for the OpenAPI schema: sync, meta, cancel and error answers."""

from __future__ import annotations

from rest_framework import serializers


class CancelResultSerializer(serializers.Serializer):
    job_id = serializers.IntegerField()
    detail = serializers.CharField()
    warning = serializers.CharField(
        allow_blank=True,
        help_text="Set when the experiment is still desired RUNNING (the reconciler will "
        "launch it again).",
    )


class SyncTaskSerializer(serializers.Serializer):
    source = serializers.CharField()
    task_id = serializers.CharField()


class SyncQueuedSerializer(serializers.Serializer):
    tasks = SyncTaskSerializer(many=True)


class SyncSourceSerializer(serializers.Serializer):
    source = serializers.CharField()
    label = serializers.CharField()
    available = serializers.BooleanField(help_text="False when this syncer is not installed.")
    interval_seconds = serializers.IntegerField()
    stale_after_seconds = serializers.IntegerField()
    last_attempt = serializers.DateTimeField(allow_null=True)
    last_success = serializers.DateTimeField(allow_null=True)
    ok = serializers.BooleanField(allow_null=True, help_text="Whether the last attempt worked.")
    last_error = serializers.CharField(allow_blank=True)
    last_error_at = serializers.DateTimeField(allow_null=True)
    age_seconds = serializers.FloatField(allow_null=True)
    stale = serializers.BooleanField(help_text="No success within stale_after_seconds.")
    running = serializers.BooleanField(help_text="A pass holds the lease right now.")
    duration_seconds = serializers.FloatField(allow_null=True)
    counts = serializers.DictField(child=serializers.JSONField())


class WorkerSerializer(serializers.Serializer):
    alive = serializers.BooleanField()
    last_task_at = serializers.DateTimeField(allow_null=True)
    age_seconds = serializers.FloatField(allow_null=True)
    busy = serializers.IntegerField(help_text="Tasks a worker has taken and not finished.")
    queued = serializers.IntegerField(help_text="Tasks waiting for a worker.")
    alive_within_seconds = serializers.IntegerField()


class SyncStatusSerializer(serializers.Serializer):
    sources = SyncSourceSerializer(many=True)
    worker = WorkerSerializer()


class EnumsSerializer(serializers.Serializer):
    desired_states = serializers.ListField(child=serializers.CharField())
    current_states = serializers.ListField(child=serializers.CharField())
    job_statuses = serializers.ListField(child=serializers.CharField())
    active_job_statuses = serializers.ListField(child=serializers.CharField())
    operations = serializers.ListField(child=serializers.CharField())
    sync_sources = serializers.ListField(child=serializers.CharField())
    bulk_actions = serializers.ListField(child=serializers.CharField())


class AuthSchemeSerializer(serializers.Serializer):
    scheme = serializers.CharField()
    description = serializers.CharField()


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    read_only = serializers.BooleanField()


class MetaSerializer(serializers.Serializer):
    version = serializers.CharField(help_text="SkyDeck's version.")
    api_version = serializers.CharField()
    enums = EnumsSerializer()
    auth = AuthSchemeSerializer(many=True)
    read_only_group = serializers.CharField()
    user = MeSerializer()


# --- errors (documentation only) ------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


class ConflictSerializer(serializers.Serializer):
    detail = serializers.CharField()
    updated_at = serializers.DateTimeField(
        required=False, help_text="The row's current updated_at, when a precondition failed."
    )
