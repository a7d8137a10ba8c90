"""Web UI routes (included at "" by skydeck_site.urls; every page needs a login)."""

from django.urls import path, re_path

from experiments import views, views_columns, views_compare, views_fork, views_sweeps

urlpatterns = [
    path("", views.dashboard_view, name="dashboard"),
    path("experiments/new", views.experiment_create, name="experiment_create"),
    path("experiments/bulk", views.bulk_action, name="bulk_action"),
    path("experiments/bulk/confirm", views.bulk_confirm, name="bulk_confirm"),
    path("experiments/name-check", views.experiment_name_check, name="experiment_name_check"),
    path("experiments/<int:pk>/", views.experiment_detail, name="experiment_detail"),
    path("experiments/<int:pk>/panels", views.experiment_panels, name="experiment_panels"),
    path("experiments/<int:pk>/edit", views.experiment_edit, name="experiment_edit"),
    path("experiments/<int:pk>/duplicate", views.experiment_duplicate, name="experiment_duplicate"),
    path("experiments/<int:pk>/delete", views.experiment_delete, name="experiment_delete"),
    path("experiments/<int:pk>/desired", views.experiment_desired, name="experiment_desired"),
    path("experiments/<int:pk>/adopt", views.experiment_adopt, name="experiment_adopt"),
    path("experiments/<int:pk>/star", views.experiment_star, name="experiment_star"),
    path("experiments/<int:pk>/history", views.experiment_history, name="experiment_history"),
    path(
        "experiments/<int:pk>/history/<int:number>/restore",
        views.experiment_restore,
        name="experiment_restore",
    ),
    path("groups/new", views.group_create, name="group_create"),
    path("groups/<int:pk>/rename", views.group_rename, name="group_rename"),
    path("groups/<int:pk>/columns", views_columns.group_columns, name="group_columns"),
    path("groups/<int:pk>/place", views_columns.group_place, name="group_place"),
    path(
        "groups/<int:pk>/members/<int:experiment_pk>/place",
        views_columns.member_place,
        name="member_place",
    ),
    path("groups/<int:pk>/commands", views.group_commands, name="group_commands"),
    path("groups/<int:pk>/collapse", views.group_collapse, name="group_collapse"),
    path("groups/<int:pk>/delete", views.group_delete, name="group_delete"),
    path("groups/<int:pk>/move", views.group_move, name="group_move"),
    # a section of the deck ("u": Ungrouped): built when it scrolls into view, and its next rows
    path("groups/<str:key>/section", views.group_section, name="group_section"),
    path("groups/<str:key>/rows", views.group_section, {"rows": True}, name="group_rows"),
    path(
        "groups/<int:pk>/members/<int:experiment_pk>/move",
        views.member_move,
        name="member_move",
    ),
    path("sweeps/new", views_sweeps.sweep_new, name="sweep_new"),
    path("checkpoints/<int:pk>/fork", views_fork.checkpoint_fork, name="checkpoint_fork"),
    re_path(r"^jobs/?$", views.jobs_view, name="jobs"),  # /jobs and /jobs/ alike
    path("jobs/<int:pk>/cancel", views.job_cancel, name="job_cancel"),
    path("jobs/<int:pk>/logs", views.job_log, name="job_log"),
    path("jobs/<int:pk>/logs/stream", views.job_log_stream, name="job_log_stream"),
    path("jobs/<int:pk>/logs/download", views.job_log_download, name="job_log_download"),
    re_path(r"^operations/?$", views.operations_view, name="operations"),
    re_path(r"^failures/?$", views.failures_view, name="failures"),
    path("failures/confirm", views.failures_confirm, name="failures_confirm"),
    re_path(r"^usage/?$", views.usage_view, name="usage"),
    re_path(r"^compare/?$", views_compare.compare_view, name="compare"),
    path("reconciler/resume", views.reconciler_resume, name="reconciler_resume"),
]
