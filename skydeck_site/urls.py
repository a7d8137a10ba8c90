from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from experiments import views

urlpatterns = [
    path("api/health", views.health, name="health"),
    path("api/", include("experiments.api.urls")),
    path("admin/", admin.site.urls),
    # Log in and out only: SkyDeck sends no mail, so there is no password-reset flow to expose
    # (an admin sets passwords: `skydeck changepassword NAME`).
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # the admin's pages (and browsers on their own) ask for /favicon.ico: SkyDeck's mark
    path("favicon.ico", RedirectView.as_view(url=static("skydeck/favicon.svg"), permanent=False)),
    path("", include("experiments.urls")),
]

# A refused write (a read-only role, a missing permission) answers 403 with the reason.
handler403 = "experiments.views.permission_denied"
