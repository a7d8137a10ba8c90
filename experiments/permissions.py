"""API permissions: every endpoint needs a login; members of the "read-only" group only read."""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

#: Members of this Django group may read everything through the API but change nothing.
READ_ONLY_GROUP = "read-only"


def is_read_only_user(user) -> bool:
    if not getattr(user, "is_authenticated", False):
        return False
    cached = getattr(user, "_skydeck_read_only", None)
    if cached is None:
        cached = user.groups.filter(name=READ_ONLY_GROUP).exists()
        user._skydeck_read_only = cached
    return cached


class WriteUnlessReadOnly(BasePermission):
    """Safe methods for every authenticated user; writes only outside the read-only group."""

    message = f'Your account is read-only (member of the "{READ_ONLY_GROUP}" group).'

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return True
        return not is_read_only_user(request.user)
