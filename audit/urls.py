"""The audit log's URLs: the page ``/audit/`` and ``/api/audit`` (included by rayanpbx/urls.py)."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from audit import views

router = SimpleRouter()
router.trailing_slash = "/?"
router.register("audit", views.AuditViewSet, basename="audit")

urlpatterns = [
    path("audit/", views.page, name="audit"),
    path("api/", include(router.urls)),
]
