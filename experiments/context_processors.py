"""Template context every page gets."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from experiments.services import is_read_only_user


def roles(request: HttpRequest) -> dict[str, Any]:
    """``read_only``: the pages hide the controls of writes the services would refuse (403).

    A callable, so a page that never asks (the admin) costs no query; SkyDeck's own pages ask
    once (the answer is cached on the user).
    """
    user = getattr(request, "user", None)
    return {"read_only": lambda: bool(user is not None and is_read_only_user(user))}
