"""The Content-Security-Policy header, and pages that need nothing it forbids (issue #13).

The browser tests prove the UI runs under the policy (every one of them fails on a refusal);
these quick checks keep the header on every kind of response and keep inline code out of the
server-rendered pages, so a regression shows up in the main suite too.
"""

from __future__ import annotations

import re

import pytest
from django.conf import settings

pytestmark = pytest.mark.django_db

INLINE = [
    re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I),  # an inline script
    re.compile(r"<style\b", re.I),  # an inline stylesheet
    re.compile(r"\sstyle=", re.I),  # a style attribute
    re.compile(r"\son[a-z]+=", re.I),  # an event handler attribute
    re.compile(r"javascript:", re.I),
]


def test_the_policy_forbids_inline_code_eval_and_framing():
    policy = settings.CONTENT_SECURITY_POLICY
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval'
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"


@pytest.mark.parametrize("path", ["/accounts/login/", "/api/health", "/api/experiments/", "/"])
def test_every_kind_of_response_carries_the_header(client, path):
    response = client.get(path)
    assert response["Content-Security-Policy"] == settings.CONTENT_SECURITY_POLICY


def test_pages_render_no_inline_code(web, make_experiment, make_job, admin_client):
    exp = make_experiment("inline-check", base_command="python train.py")
    make_job(5, name="inline-check")
    pages = {
        path: web.get(path).content.decode()
        for path in [
            "/",
            f"/experiments/{exp.pk}/",
            f"/experiments/{exp.pk}/panels",
            "/experiments/new",
            "/jobs",
            "/operations",
            f"/experiments/{exp.pk}/desired?state=RUNNING",
        ]
    }
    pages["/admin/"] = admin_client.get("/admin/").content.decode()
    for path, html in pages.items():
        for pattern in INLINE:
            found = pattern.search(html)
            assert found is None, f"{path}: {found.group(0) if found else ''}"
    # htmx runs without eval (the policy would refuse it) and settles no style attribute
    assert '"allowEval": false' in pages["/"] and '"includeIndicatorStyles": false' in pages["/"]
