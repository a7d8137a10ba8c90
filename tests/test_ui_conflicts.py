"""Two editors on one experiment (issue 13 item 5): no lost updates.

Every editor carries the version and values it was loaded with; a save applies only the fields
the user changed. Different fields merge; a field changed on both sides is a 409 with both values
shown, nothing saved and the typed values kept; saving that re-rendered form overwrites.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from experiments import services
from experiments.models import Experiment, Operation, OperationLog

HX = {"HTTP_HX_REQUEST": "true"}


class _FormFields(HTMLParser):
    """The fields an editor form would post (inputs and textareas, in order)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.data: dict[str, list[str]] = {}
        self._textarea: str | None = None
        self._in_template = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "template":
            self._in_template += 1
        if self._in_template or not attrs.get("name"):
            return
        if tag == "input" and attrs.get("type") not in {"submit", "button"}:
            self.data.setdefault(attrs["name"], []).append(attrs.get("value") or "")
        elif tag == "textarea":
            self._textarea = attrs["name"]
            self.data.setdefault(self._textarea, []).append("")

    def handle_endtag(self, tag):
        if tag == "template":
            self._in_template -= 1
        if tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            # an HTML parser drops the one newline right after <textarea>
            self.data[self._textarea][-1] += data.removeprefix("\n")


def form_data(html: str) -> dict[str, list[str]]:
    parser = _FormFields()
    parser.feed(html)
    parser.data.pop("csrfmiddlewaretoken", None)
    return parser.data


def load(client: Client, exp: Experiment) -> dict[str, list[str]]:
    """What the editor shows (a Reset / a fresh load), as the browser would post it."""
    response = client.get(reverse("experiment_edit", args=[exp.pk]), **HX)
    assert response.status_code == 200
    return form_data(response.content.decode())


def save(client: Client, exp: Experiment, data: dict[str, list[str]], **typed):
    data = {**data, **{k: v if isinstance(v, list) else [v] for k, v in typed.items()}}
    return client.post(reverse("experiment_edit", args=[exp.pk]), data, **HX)


@pytest.fixture
def alice(db):
    client = Client()
    client.force_login(User.objects.create_user("alice", password="pw"))
    return client


@pytest.fixture
def bob(db):
    client = Client()
    client.force_login(User.objects.create_user("bob", password="pw"))
    return client


@pytest.fixture
def exp(make_experiment):
    return make_experiment(
        "shared", nodes=2, gpus=8, accelerator="H100", description="first", flags={"lr": 0.1}
    )


def updates(exp: Experiment) -> int:
    return OperationLog.objects.filter(experiment=exp, operation=Operation.UPDATE).count()


def test_editor_carries_its_version(alice, exp):
    data = load(alice, exp)
    assert data["version"] == [exp.updated_at.isoformat()]
    assert '"nodes": 2' in data["base"][0]


def test_different_fields_merge(alice, bob, exp):
    a, b = load(alice, exp), load(bob, exp)
    assert save(alice, exp, a, nodes="4").status_code == 200
    response = save(bob, exp, b, description="second", flag_key=["lr"], flag_value=["0.2"])
    assert response.status_code == 200 and b"Saved." in response.content
    exp.refresh_from_db()
    assert exp.nodes == 4  # alice's change is not reverted by bob's stale "2"
    assert exp.description == "second" and exp.flags == {"lr": 0.2}
    assert updates(exp) == 2
    message = OperationLog.objects.order_by("-id").first().message
    assert message == "lr 0.1 → 0.2, description first → second"


def test_same_field_is_a_conflict(alice, bob, exp):
    a, b = load(alice, exp), load(bob, exp)
    assert save(alice, exp, a, nodes="4").status_code == 200
    exp.refresh_from_db()
    saved_version = exp.updated_at
    logs = list(OperationLog.objects.values_list("id", "message"))

    response = save(bob, exp, b, nodes="16", description="bob's note")
    assert response.status_code == 409
    html = response.content.decode()
    assert "last saved by alice" in html
    conflict = html[html.index("data-conflict>") : html.index("</table>")]
    assert "Nodes" in conflict and '<td class="mono" data-saved>4</td>' in conflict
    assert '<td class="mono" data-yours>16</td>' in conflict
    assert "Description" not in conflict  # bob's other change does not conflict
    # nothing saved, nothing logged
    exp.refresh_from_db()
    assert exp.nodes == 4 and exp.description == "first" and exp.updated_at == saved_version
    assert list(OperationLog.objects.values_list("id", "message")) == logs
    # what bob typed is still in the inputs; the form now carries the saved version
    again = form_data(html)
    assert again["nodes"] == ["16"] and again["description"] == ["bob's note"]
    assert again["version"] == [saved_version.isoformat()]
    assert again["flag_key"][0] == "lr" and again["flag_value"][0] == "0.1"

    # saving that form is a deliberate overwrite
    response = save(bob, exp, again)
    assert response.status_code == 200 and b"Saved." in response.content
    exp.refresh_from_db()
    assert exp.nodes == 16 and exp.description == "bob's note"


def test_conflict_keeps_fields_changed_meanwhile_that_you_did_not_touch(alice, bob, exp):
    a, b = load(alice, exp), load(bob, exp)
    save(alice, exp, a, nodes="4", git_ref="release")
    response = save(bob, exp, b, nodes="16")
    assert response.status_code == 409
    again = form_data(response.content.decode())
    # bob did not touch git_ref: the re-rendered editor shows alice's value, not the stale one
    assert again["git_ref"] == ["release"] and again["nodes"] == ["16"]
    assert save(bob, exp, again).status_code == 200
    exp.refresh_from_db()
    assert exp.nodes == 16 and exp.git_ref == "release"


def test_same_value_on_both_sides_is_no_conflict(alice, bob, exp):
    a, b = load(alice, exp), load(bob, exp)
    save(alice, exp, a, nodes="4")
    assert save(bob, exp, b, nodes="4", gpus="4").status_code == 200
    exp.refresh_from_db()
    assert exp.nodes == 4 and exp.gpus == 4


def test_flags_changed_on_both_sides_conflict(alice, bob, exp):
    a, b = load(alice, exp), load(bob, exp)
    save(alice, exp, a, flag_key=["lr"], flag_value=["0.5"])
    response = save(bob, exp, b, flag_key=["lr", "batch"], flag_value=["0.1", "64"])
    assert response.status_code == 409
    html = response.content.decode()
    assert "lr=0.5" in html and "lr=0.1, batch=64" in html
    assert form_data(html)["flag_key"][:2] == ["lr", "batch"]
    assert Experiment.objects.get(pk=exp.pk).flags == {"lr": 0.5}


def test_conflict_without_htmx_renders_the_page(alice, bob, exp):
    a, b = load(alice, exp), load(bob, exp)
    save(alice, exp, a, nodes="4")
    response = bob.post(reverse("experiment_edit", args=[exp.pk]), {**b, "nodes": ["16"]})
    assert response.status_code == 409 and b"<html" in response.content
    assert b"data-conflict" in response.content


def test_change_by_another_door_meanwhile(alice, exp):
    """An API/admin/command update between load and save counts the same."""
    a = load(alice, exp)
    services.update_experiment("command", Experiment.objects.get(pk=exp.pk), accelerator="A100")
    response = save(alice, exp, a, accelerator="L4")
    assert response.status_code == 409
    assert b"last saved by command" in response.content


def test_service_without_new_arguments_is_unchanged(exp):
    stale = Experiment.objects.get(pk=exp.pk)
    services.update_experiment("x", Experiment.objects.get(pk=exp.pk), nodes=4)
    services.update_experiment("y", stale, description="blind")  # the old last-write-wins
    exp.refresh_from_db()
    assert exp.description == "blind" and exp.nodes == 2


def test_service_version_without_base(exp):
    loaded = exp.updated_at
    services.update_experiment("x", Experiment.objects.get(pk=exp.pk), nodes=4)
    with pytest.raises(services.ConflictError) as caught:
        services.update_experiment(
            "y", Experiment.objects.get(pk=exp.pk), expected_updated_at=loaded, nodes=8, gpus=8
        )
    assert caught.value.fields == ["nodes"] and caught.value.current == {"nodes": 4}
    assert caught.value.last_update.actor == "x"
    assert isinstance(caught.value, services.ValidationError)
