"""REST API: experiment groups and their members."""

from __future__ import annotations

import pytest

from experiments import services
from experiments.models import ExperimentGroup, Operation, OperationLog

pytestmark = pytest.mark.django_db


@pytest.fixture
def trio(make_experiment):
    return [make_experiment(name) for name in ("a", "b", "c")]


def member_names(group: ExperimentGroup) -> list[str]:
    return [e.name for e in group.ordered_experiments()]


def test_create_list_retrieve(api, trio):
    first = api.post("/api/groups/", {"name": "Sweep 1", "flags": ["lr"]}, format="json")
    assert first.status_code == 201, first.json()
    second = api.post("/api/groups/", {"name": "Sweep 2", "collapsed": True}, format="json")
    assert second.json()["order"] == first.json()["order"] + 1
    assert second.json()["collapsed"] is True
    assert second["ETag"]
    assert OperationLog.objects.filter(operation=Operation.GROUP_CREATE).count() == 2

    services.add_to_group("tester", ExperimentGroup.objects.get(name="Sweep 1"), trio[::-1])
    listed = api.get("/api/groups/").json()
    assert [g["name"] for g in listed["results"]] == ["Sweep 1", "Sweep 2"]
    assert [m["name"] for m in listed["results"][0]["members"]] == ["c", "b", "a"]
    assert listed["results"][0]["members"][0] == {
        "id": trio[2].pk,
        "name": "c",
        "order": 0,
        "desired_state": "STOPPED",
        "current_state": "NO_JOB",
    }
    one = api.get(f"/api/groups/{first.json()['id']}/")
    assert one.status_code == 200 and one.json()["flags"] == ["lr"]
    assert api.get("/api/groups/?name=2").json()["count"] == 1
    assert api.get("/api/groups/999/").status_code == 404
    assert api.get("/api/groups/abc/").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({"name": "a\nb"}, "name"),
        ({"name": "g", "flags": "lr"}, "flags"),
        ({"name": "g", "flags": ["bad key"]}, "flags"),
        ({"name": "g", "flags": ["lr", "lr"]}, "flags"),
        ({"name": "g", "flags": [1]}, "flags"),
        ({"name": "g", "collapsed": "yes"}, "collapsed"),
        ({"name": "g", "order": 3}, "order"),
        ({"name": "g", "members": []}, "members"),
    ],
)
def test_create_validation(api, body, field):
    response = api.post("/api/groups/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert not ExperimentGroup.objects.exists()


def test_duplicate_group_name_is_400(api):
    services.create_group("tester", "taken")
    response = api.post("/api/groups/", {"name": "taken"}, format="json")
    assert response.status_code == 400 and "name" in response.json()


def test_update_and_delete(api, trio):
    group = services.create_group("tester", "g")
    services.add_to_group("tester", group, trio)
    url = f"/api/groups/{group.pk}/"

    patched = api.patch(url, {"name": "renamed", "flags": ["lr", "bs"]}, format="json")
    assert patched.status_code == 200
    assert patched.json()["name"] == "renamed" and patched.json()["flags"] == ["lr", "bs"]
    assert api.put(url, {"flags": []}, format="json").status_code == 400  # name required
    assert api.put(url, {"name": "again", "collapsed": True}, format="json").status_code == 200

    assert api.delete(url).status_code == 204
    assert not ExperimentGroup.objects.exists()
    assert api.get("/api/experiments/a/").status_code == 200  # members stay
    assert api.delete(url).status_code == 404


def test_group_preconditions(api):
    group = services.create_group("tester", "g")
    url = f"/api/groups/{group.pk}/"
    read = api.get(url)
    assert api.patch(url, {"collapsed": True}, format="json").status_code == 200
    stale = api.patch(url, {"name": "x"}, format="json", HTTP_IF_MATCH=read["ETag"])
    assert stale.status_code == 409
    assert stale.json()["updated_at"] == api.get(url).json()["updated_at"]
    body_stale = api.patch(
        url, {"name": "x", "updated_at": read.json()["updated_at"]}, format="json"
    )
    assert body_stale.status_code == 409
    assert api.delete(url, HTTP_IF_MATCH=read["ETag"]).status_code == 409
    fresh = api.get(url)["ETag"]
    assert api.patch(url, {"name": "x"}, format="json", HTTP_IF_MATCH=fresh).status_code == 200
    assert ExperimentGroup.objects.get().name == "x"


def test_membership_changes_make_an_old_etag_stale(api, trio):
    """Members live in their own table; changing them must still change the group's ETag."""
    a, b, _ = trio
    group = services.create_group("tester", "g")
    other = services.create_group("tester", "other")
    url = f"/api/groups/{group.pk}/"
    changes = [
        lambda: services.add_to_group("tester", group, [a, b]),
        lambda: services.move_member("tester", group, b, -1),
        lambda: services.reorder_group("tester", group, [a.pk, b.pk]),
        lambda: services.duplicate_experiment("tester", a),
        lambda: services.move_to_group("tester", [b], other),
        lambda: services.remove_from_group("tester", group, [a]),
    ]
    for change in changes:
        before = api.get(url)["ETag"]
        change()
        stale = api.patch(url, {"name": "x"}, format="json", HTTP_IF_MATCH=before)
        assert stale.status_code == 409, change
        assert api.get(url)["ETag"] != before


def test_members_add_keeps_other_groups_and_move_takes_them_out(api, trio):
    a, b, c = trio
    one = services.create_group("tester", "one")
    two = services.create_group("tester", "two")
    services.add_to_group("tester", one, [a, b])

    added = api.post(f"/api/groups/{two.pk}/members/", {"experiments": ["a", c.pk]}, format="json")
    assert added.status_code == 200, added.json()
    assert [m["name"] for m in added.json()["members"]] == ["a", "c"]
    assert member_names(one) == ["a", "b"]
    assert OperationLog.objects.filter(operation=Operation.GROUP_ADD).count() == 4

    moved = api.post(
        f"/api/groups/{two.pk}/members/", {"experiments": ["b"], "mode": "move"}, format="json"
    )
    assert moved.status_code == 200
    assert member_names(two) == ["a", "c", "b"]
    assert member_names(one) == ["a"]
    assert OperationLog.objects.filter(operation=Operation.GROUP_MOVE).count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"experiments": ["a", "missing"]}, "experiments"),
        ({"experiments": [999]}, "experiments"),
        ({"experiments": []}, "experiments"),
        ({"experiments": "a"}, "experiments"),
        ({"experiments": [True]}, "experiments"),
        ({"experiments": ["³"]}, "experiments"),
        ({"experiments": ["a"], "mode": "copy"}, "mode"),
        ({"experiments": ["a"], "position": 1}, "position"),
    ],
)
def test_members_add_is_all_or_nothing(api, trio, body, field):
    group = services.create_group("tester", "g")
    response = api.post(f"/api/groups/{group.pk}/members/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert member_names(group) == []


def test_members_remove_and_order(api, trio):
    group = services.create_group("tester", "g")
    services.add_to_group("tester", group, trio)
    url = f"/api/groups/{group.pk}/members"

    removed = api.post(f"{url}/remove/", {"experiments": ["b"]}, format="json")
    assert removed.status_code == 200
    assert [(m["name"], m["order"]) for m in removed.json()["members"]] == [("a", 0), ("c", 1)]
    assert api.post(f"{url}/remove", {"experiments": ["b"]}, format="json").status_code == 200
    assert api.post(f"{url}/remove/", {"experiments": ["nope"]}, format="json").status_code == 400

    ordered = api.post(f"{url}/order/", {"experiments": ["c", trio[0].pk]}, format="json")
    assert ordered.status_code == 200
    assert member_names(group) == ["c", "a"]
    incomplete = api.post(f"{url}/order/", {"experiments": ["c"]}, format="json")
    assert incomplete.status_code == 400 and "order" in incomplete.json()
    assert member_names(group) == ["c", "a"]
    stale = api.post(
        f"{url}/order/",
        {"experiments": ["a", "c"], "updated_at": "2000-01-01T00:00:00Z"},
        format="json",
    )
    assert stale.status_code == 409
    assert (
        api.post("/api/groups/999/members/order/", {"experiments": []}, format="json").status_code
        == 404
    )


def test_groups_reorder(api):
    groups = [services.create_group("tester", name) for name in ("x", "y", "z")]
    ids = [g.pk for g in reversed(groups)]
    response = api.post("/api/groups/reorder/", {"groups": ids}, format="json")
    assert response.status_code == 200
    assert response.json() == {"groups": ids}
    assert [g["name"] for g in api.get("/api/groups/").json()["results"]] == ["z", "y", "x"]
    for bad in ([ids[0]], [*ids, 999], "x", [0], [True]):
        assert api.post("/api/groups/reorder/", {"groups": bad}, format="json").status_code == 400


@pytest.mark.parametrize("count", [2, 20])
def test_group_list_uses_a_constant_number_of_queries(
    api, make_experiment, django_assert_max_num_queries, count
):
    for g in range(count):
        group = services.create_group("tester", f"group {g}")
        services.add_to_group("tester", group, [make_experiment(f"g{g}-e{i}") for i in range(3)])
    with django_assert_max_num_queries(4):  # token, count, page, members
        response = api.get("/api/groups/")
    assert len(response.json()["results"]) == count


def test_read_only_cannot_change_groups(readonly_api, trio):
    group = services.create_group("tester", "g")
    assert readonly_api.get("/api/groups/").status_code == 200
    for method, url, body in [
        ("post", "/api/groups/", {"name": "x"}),
        ("patch", f"/api/groups/{group.pk}/", {"name": "x"}),
        ("delete", f"/api/groups/{group.pk}/", None),
        ("post", f"/api/groups/{group.pk}/members/", {"experiments": ["a"]}),
        ("post", f"/api/groups/{group.pk}/members/remove/", {"experiments": ["a"]}),
        ("post", f"/api/groups/{group.pk}/members/order/", {"experiments": []}),
        ("post", "/api/groups/reorder/", {"groups": [group.pk]}),
    ]:
        assert getattr(readonly_api, method)(url, body, format="json").status_code == 403
    assert ExperimentGroup.objects.get().name == "g"
