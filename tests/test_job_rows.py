"""/jobs renders its rows in Python (``job_row``): the same markup the row template made."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from django.template import engines
from django.test import RequestFactory, override_settings

from experiments import dashboard
from experiments.templatetags.skydeck import job_row

pytestmark = pytest.mark.django_db

#: The row of templates/experiments/jobs.html before it moved to Python.
OLD_ROW = """{% load skydeck %}
    <tr>
      <td class="num">{% if job.job_link %}<a href="{{ job.job_link }}" target="_blank" rel="noopener noreferrer">{{ job.id }}</a>{% else %}<span class="job-id">{{ job.id }}</span>{% endif %}{% if job.logs_link %} <a class="small" href="{{ job.logs_link }}" target="_blank" rel="noopener noreferrer">logs</a>{% endif %} <a class="small job-log-link" href="{% url 'job_log' job.id %}" title="Stream this job's log">log</a></td>
      <td>{% if job.experiment_pk %}<a href="{% url 'experiment_detail' job.experiment_pk %}">{{ job.job_name|default:job.experiment_id }}</a>{% else %}<span class="mono">{{ job.job_name|default:"(unnamed)" }}</span> <span class="badge tone-idle" title="No experiment has this name">orphaned</span>{% endif %}</td>
      <td class="nowrap">{% state_badge job.status %}{% if job.is_active and job.status != "CANCELLING" %} {% url 'job_cancel' job.id as cancel_url %}<a class="btn tiny danger job-cancel" href="{{ cancel_url }}?next={{ request.get_full_path|urlencode }}" data-confirm-url="{{ cancel_url }}" aria-haspopup="dialog" aria-label="Cancel job {{ job.id }} ({{ job.user_name|default:'unknown user' }})">Cancel</a>{% endif %}</td>
      <td>{% include "experiments/_job_user.html" %}</td>
      <td class="nowrap">{% reltime job.submitted_at %}</td>
      <td class="nowrap">{% reltime job.started_at %}</td>
      <td class="nowrap">{% reltime job.ended_at %}</td>
      <td class="nowrap">{{ job.duration|duration }}</td>
      <td class="clip" title="{{ job.resources }}">{{ job.resources|default:"\u2013" }}</td>
      <td class="num">{{ job.recovery_count }}</td>
      <td class="clip failure" title="{{ job.failure_reason }}">{{ job.failure_reason }}</td>
    </tr>
"""


def squash(html: str) -> str:
    return re.sub(r">\s+<", "><", re.sub(r"\s+", " ", html)).strip()


@override_settings(
    SKYDECK_LINK_SKYPILOT_JOB="https://sky.example/jobs/{job_id}?n={name}",
    SKYDECK_LINK_LOGS="https://logs.example/{name}",
)
def test_a_job_row_is_the_markup_the_template_made(make_job, make_experiment):
    exp = make_experiment("lr-sweep.a")
    jobs = [
        make_job(1, "lr-sweep.a", status="RUNNING", user_name="alice", resources="2x[H100:8]"),
        make_job(
            2,
            "ghost",
            status="FAILED",
            failure_reason="<b>OOM</b> \"x\" & 'y'",
            duration=3725.5,
            recovery_count=2,
            user_name="",
        ),
        make_job(3, None, status="CANCELLING", job_name=""),
        make_job(4, "lr-sweep.a", status="SUCCEEDED", started_at=None, ended_at=None),
    ]
    request = RequestFactory().get("/jobs", {"q": "a b&c", "status": "RUNNING"})
    template = engines["django"].from_string(OLD_ROW)
    next_query = "next=" + quote(request.get_full_path(), safe="/")
    for job, owned in zip(jobs, [True, False, False, True], strict=True):
        job.owned = owned
        job.experiment_pk = exp.pk if job.experiment_id == exp.name else None
        name = job.job_name or job.experiment_id or ""
        job.job_link = dashboard.build_link("job", name=name, job_id=job.id)
        job.logs_link = dashboard.build_link("logs", name=name, job_id=job.id)
        old = template.render({"job": job}, request)
        assert squash(job_row(job, next_query)) == squash(old), job.id
