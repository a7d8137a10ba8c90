"""Job statuses and the experiment's current states: plain enums the models and querysets share.

Their own module so ``querysets`` can use them without importing ``models`` (which imports it).
``experiments.models`` re-exports them; import them from there.
"""

from __future__ import annotations

from django.db import models


class JobStatus(models.TextChoices):
    """Every SkyPilot ManagedJobStatus (SkyPilot 0.14)."""

    PENDING = "PENDING"
    SUBMITTED = "SUBMITTED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    WINDING_DOWN = "WINDING_DOWN"
    RECOVERING = "RECOVERING"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    FAILED_SETUP = "FAILED_SETUP"
    FAILED_PRECHECKS = "FAILED_PRECHECKS"
    FAILED_NO_RESOURCE = "FAILED_NO_RESOURCE"
    FAILED_CONTROLLER = "FAILED_CONTROLLER"

    @classmethod
    def active(cls) -> list[str]:
        return [
            cls.PENDING,
            cls.SUBMITTED,
            cls.STARTING,
            cls.RUNNING,
            cls.WINDING_DOWN,
            cls.RECOVERING,
            cls.CANCELLING,
        ]

    @classmethod
    def terminal(cls) -> list[str]:
        return [s for s in cls.values if s not in cls.active()]

    @classmethod
    def failed(cls) -> list[str]:
        return [s for s in cls.values if s.startswith("FAILED")]


NO_JOB = "NO_JOB"
CURRENT_STATE_CHOICES = [(NO_JOB, "No job yet"), *JobStatus.choices]


__all__ = ["CURRENT_STATE_CHOICES", "NO_JOB", "JobStatus"]
