"""Web UI routes."""

urlpatterns: list = []
