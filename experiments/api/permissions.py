"""API permissions: every endpoint needs a login; members of the "read-only" group only read."""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from experiments.services import READ_ONLY_GROUP, is_read_only_user


class WriteUnlessReadOnly(BasePermission):
    """Safe methods for every authenticated user; writes only outside the read-only group."""

    message = f'Your account is read-only (member of the "{READ_ONLY_GROUP}" group).'

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return True
        return not is_read_only_user(request.user)
