"""Every door enforces roles (issue 13): one matrix walks every write route of the UI, the
admin and the API as anonymous, read-only, view-only staff and full users.

The rule lives once, in the services (``services.writes``); the doors only pass the actor. A
refused write changes nothing: no row, no operation-log entry, no request to SkyPilot.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client
from django.urls import URLPattern, get_resolver, reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from experiments import services
from experiments.models import Experiment, ExperimentGroup, OperationLog
from experiments.services import READ_ONLY_GROUP

pytestmark = pytest.mark.django_db

#: UI routes that only read (their POST, if any, is refused by method, not by role).
UI_READS = {
    "dashboard",
    "bulk_confirm",
    "experiment_name_check",
    "experiment_detail",
    "experiment_panels",
    "experiment_history",
    "group_commands",
    "group_section",
    "group_rows",
    "jobs",
    "job_log",
    "job_log_stream",
    "job_log_download",
    "operations",
    "failures",
    "failures_confirm",
    "usage",
    "compare",
}


@pytest.fixture
def world(make_experiment, make_job, make_checkpoint, server):
    exp = make_experiment("exp", nodes=1, gpus=8, accelerator="H100", base_command="run")
    checkpoint = make_checkpoint(exp, 120)  # to fork from
    other = make_experiment("other", desired_state="RUNNING")
    group = services.create_group("tester", "g")
    after = services.create_group("tester", "after-g")  # so that moving g down changes something
    services.add_to_group("tester", group, [exp, other])
    job = make_job(4398, "exp", user_name="dave")
    from experiments import control

    control.pause_reconciler("restore", "a restore")  # so that Resume has something to do
    return {
        "exp": exp,
        "other": other,
        "group": group,
        "after_group": after,
        "job": job,
        "server": server,
        "checkpoint": checkpoint,
    }


def ui_write_routes(world) -> list[tuple[str, str, dict]]:
    """(route name, url, form data a full user would send) for every UI write route."""
    exp, group, job = world["exp"], world["group"], world["job"]
    data = {
        "experiment_create": (
            reverse("experiment_create"),
            {"name": "new-one", "nodes": 1, "gpus": 0},
        ),
        "experiment_edit": (
            reverse("experiment_edit", args=[exp.pk]),
            {"name": "exp", "nodes": 2, "gpus": 8, "accelerator": "H100", "base_command": "run"},
        ),
        "experiment_duplicate": (reverse("experiment_duplicate", args=[exp.pk]), {}),
        "experiment_delete": (reverse("experiment_delete", args=[exp.pk]), {}),
        "experiment_desired": (
            reverse("experiment_desired", args=[exp.pk]),
            {"state": "STOPPED", "confirmed": "1", "jobs": [job.pk]},
        ),
        "experiment_adopt": (reverse("experiment_adopt", args=[exp.pk]), {"confirmed": "1"}),
        "experiment_star": (reverse("experiment_star", args=[exp.pk]), {"starred": "1"}),
        "experiment_restore": (reverse("experiment_restore", args=[exp.pk, 1]), {}),
        "sweep_new": (
            reverse("sweep_new") + f"?from={exp.pk}",
            {"axis_key": "lr", "axis_spec": "1, 2", "mode": "grid"},
        ),
        "group_create": (reverse("group_create"), {"name": "g2"}),
        "group_rename": (reverse("group_rename", args=[group.pk]), {"name": "g3"}),
        "group_collapse": (reverse("group_collapse", args=[group.pk]), {"collapsed": "1"}),
        "group_delete": (reverse("group_delete", args=[group.pk]), {}),
        "group_move": (reverse("group_move", args=[group.pk]), {"direction": "down"}),
        "member_move": (
            reverse("member_move", args=[group.pk, exp.pk]),
            {"direction": "down"},
        ),
        "member_place": (
            reverse("member_place", args=[group.pk, exp.pk]),
            {"after": world["other"].pk},
        ),
        "group_place": (
            reverse("group_place", args=[group.pk]),
            {"after": world["after_group"].pk},
        ),
        "group_columns": (reverse("group_columns", args=[group.pk]), {"columns": ["lr"]}),
        "job_cancel": (reverse("job_cancel", args=[job.pk]), {"confirmed": "1"}),
        "checkpoint_fork": (
            reverse("checkpoint_fork", args=[world["checkpoint"].pk]),
            {"name": "exp.fork", "nodes": 1, "gpus": 8, "uri_flag": "init.uri"},
        ),
        "reconciler_resume": (reverse("reconciler_resume"), {"confirmed": "1"}),
    }
    routes = [(name, url, body) for name, (url, body) in data.items()]
    for action in ("start", "stop", "duplicate", "delete", "move", "add", "remove"):
        body = {"action": action, "ids": [exp.pk], "group": group.pk, "confirmed": "1"}
        routes.append((f"bulk_action:{action}", reverse("bulk_action"), body))
    return routes


def test_every_ui_route_is_classified():
    """A new UI route must be put in UI_READS or in the write matrix below."""
    names = {
        p.name for p in get_resolver("experiments.urls").url_patterns if isinstance(p, URLPattern)
    }
    written = {name.split(":")[0] for name, _, _ in ui_write_routes(_FakeWorld())}
    assert names == UI_READS | written


class _FakeWorld(dict):
    """Enough of ``world`` to build the URLs without a database."""

    def __init__(self):
        class Obj:
            pk = 1

        super().__init__(
            exp=Obj(), other=Obj(), group=Obj(), after_group=Obj(), job=Obj(), checkpoint=Obj()
        )


def _user(name: str, *, read_only: bool = False, staff: bool = False) -> User:
    user = User.objects.create_user(name, password="pw")
    if read_only:
        user.groups.add(Group.objects.get_or_create(name=READ_ONLY_GROUP)[0])
    if staff:
        user.is_staff = True
        user.save()
    return user


def _snapshot():
    return (
        OperationLog.objects.count(),
        list(
            Experiment.objects.order_by("pk").values_list(
                "name", "desired_state", "nodes", "starred"
            )
        ),
        list(ExperimentGroup.objects.order_by("pk").values_list("name", "order", "collapsed")),
    )


@pytest.mark.parametrize("htmx", [False, True])
def test_a_read_only_user_can_write_nothing_through_the_ui(world, htmx):
    client = Client()
    client.force_login(_user("viewer", read_only=True))
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    refused = []
    for name, url, body in ui_write_routes(world):
        before = _snapshot()
        response = client.post(url, body, **headers)
        assert response.status_code == 403, (name, response.status_code, response.content[:300])
        assert "read-only" in response.content.decode(), name
        if htmx:
            assert response["Content-Type"].startswith("text/plain"), name
        assert _snapshot() == before, name
        refused.append(name)
    assert world["server"].cancel_bodies == [] and world["server"].launch_bodies == []
    assert refused == [name for name, _, _ in ui_write_routes(world)]


def test_anonymous_requests_are_sent_to_the_login_page(world):
    client = Client()
    for name, url, body in ui_write_routes(world):
        before = _snapshot()
        response = client.post(url, body)
        assert response.status_code == 302, name
        assert response["Location"].startswith("/accounts/login/"), name
        assert _snapshot() == before, name


def test_a_full_user_passes_every_ui_route(world):
    client = Client()
    client.force_login(_user("writer"))
    for name, url, body in ui_write_routes(world):
        if not Experiment.objects.filter(pk=world["exp"].pk).exists():
            break  # a delete went through: the rest would be 404s
        response = client.post(url, body)
        assert response.status_code != 403, (name, response.content[:300])


def test_view_only_staff_cannot_run_admin_actions_or_edit(world):
    staff = _user("clerk", staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    client = Client()
    client.force_login(staff)
    changelist = reverse("admin:experiments_experiment_changelist")
    page = client.get(changelist)
    assert page.status_code == 200
    from experiments.admin import ExperimentAdmin

    for action in ExperimentAdmin.actions:
        assert f'value="{action}"' not in page.content.decode(), action
        before = _snapshot()
        response = client.post(
            changelist,
            {"action": action, "_selected_action": [world["exp"].pk], "post": "yes"},
            follow=True,
        )
        assert response.status_code == 200
        assert _snapshot() == before, action
    change = reverse("admin:experiments_experiment_change", args=[world["exp"].pk])
    before = _snapshot()
    assert client.post(change, {"name": "renamed"}).status_code == 403
    assert (
        client.post(reverse("admin:experiments_experiment_add"), {"name": "x"}).status_code == 403
    )
    assert _snapshot() == before
    assert world["server"].cancel_bodies == []


def _api_write_operations(client: APIClient, world) -> list[tuple[str, str, str]]:
    """(method, path, operationId) of every write in the OpenAPI schema, with real ids."""
    schema = client.get("/api/schema/?format=json").json()
    values = {
        "id_or_name": "exp",
        "id": str(world["job"].pk),
        "number": "1",  # a revision (experiments' config history)
    }
    operations = []
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method not in {"post", "put", "patch", "delete"}:
                continue
            concrete = path
            for key, value in values.items():
                concrete = concrete.replace("{" + key + "}", value)
            if "/groups/" in path:
                concrete = concrete.replace("{id}", str(world["group"].pk))
            operations.append((method, concrete, operation.get("operationId", "")))
    return operations


def test_a_read_only_token_can_write_nothing_through_the_api(world):
    reader = APIClient()
    reader.credentials(
        HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=_user('viewer', read_only=True)).key}"
    )
    operations = _api_write_operations(reader, world)
    assert len(operations) >= 17
    for method, path, operation_id in operations:
        before = _snapshot()
        response = getattr(reader, method)(path, {}, format="json")
        assert response.status_code == 403, (method, path, operation_id, response.content[:200])
        assert _snapshot() == before, (method, path)
    assert world["server"].cancel_bodies == [] and world["server"].launch_bodies == []


def test_services_refuse_a_read_only_actor_whatever_the_door(world):
    from django.core.exceptions import PermissionDenied

    from experiments import control
    from syncing import services as door

    viewer = _user("viewer", read_only=True)
    exp = world["exp"]
    calls = [
        lambda: services.create_experiment(viewer, name="x"),
        lambda: services.update_experiment(viewer, exp, nodes=3),
        lambda: services.delete_experiments(viewer, [exp]),
        lambda: services.duplicate_experiment(viewer, exp),
        lambda: services.set_desired_state(viewer, [exp], "RUNNING"),
        lambda: services.create_group(viewer, "x"),
        lambda: door.start(viewer, [exp]),
        lambda: door.stop(viewer, [exp]),
        lambda: door.adopt(viewer, exp),
        lambda: door.cancel_job(viewer, world["job"]),
        lambda: control.resume_reconciler(viewer),
    ]
    for call in calls:
        before = _snapshot()
        with pytest.raises(PermissionDenied, match="read-only"):
            call()
        assert _snapshot() == before
    assert world["server"].cancel_bodies == []
