from django.contrib import admin
from django.urls import include, path

from experiments import views

urlpatterns = [
    path("api/health", views.health, name="health"),
    path("api/", include("experiments.api_urls")),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("experiments.urls")),
]

# A refused write (a read-only role, a missing permission) answers 403 with the reason.
handler403 = "experiments.views.permission_denied"
