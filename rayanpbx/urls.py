"""URL map: pages, REST API (``/api``, ``/api/pbx``), OpenAPI schema and docs, admin, health."""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from extensions.views import ExtensionViewSet
from live.views import PresenceView, health
from pbx import views as pbx_views
from rayanpbx import metrics
from rayanpbx.api import auth
from trunks.views import TrunkViewSet

router = SimpleRouter()
router.trailing_slash = "/?"  # both /api/extensions and /api/extensions/ answer
router.register("extensions", ExtensionViewSet)
router.register("trunks", TrunkViewSet)

api_urlpatterns = [
    re_path(r"^auth/login/?$", auth.LoginView.as_view(), name="auth-login"),
    re_path(r"^auth/refresh/?$", auth.RefreshView.as_view(), name="auth-refresh"),
    re_path(r"^auth/logout/?$", auth.LogoutView.as_view(), name="auth-logout"),
    re_path(r"^auth/user/?$", auth.CurrentUserView.as_view(), name="auth-user"),
    re_path(r"^presence/?$", PresenceView.as_view(), name="presence"),
    re_path(r"^pbx/?$", pbx_views.PbxStatusView.as_view(), name="pbx-status"),
    re_path(r"^pbx/apply/?$", pbx_views.PbxApplyView.as_view(), name="pbx-apply"),
    re_path(r"^pbx/config/?$", pbx_views.PbxConfigView.as_view(), name="pbx-config"),
    re_path(r"^pbx/registrations/?$", pbx_views.PbxRegistrationsView.as_view(), name="pbx-registrations"),
    re_path(r"^pbx/calls/?$", pbx_views.PbxCallsView.as_view(), name="pbx-calls"),
    re_path(r"^pbx/trunks/?$", pbx_views.PbxTrunksView.as_view(), name="pbx-trunks"),
    re_path(r"^pbx/security/?$", pbx_views.PbxSecurityView.as_view(), name="pbx-security"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include(router.urls)),
]

urlpatterns = [
    path("", include("rayanpbx.pages")),
    # The logs, console and traffic pages with their REST API (each module: its page and /api/...).
    path("", include("live.log_views")),
    path("", include("pbx.console_views")),
    path("", include("pbx.traffic_views")),
    path("", include("audit.urls")),  # the audit page and /api/audit
    path("api/", include(api_urlpatterns)),
    path("admin/", admin.site.urls),
    path("health", health, name="health"),
    path("metrics", metrics.metrics_view, name="metrics"),  # Prometheus (rayanpbx/metrics.py)
]

handler404 = "rayanpbx.api.errors.handler404"
handler500 = "rayanpbx.api.errors.handler500"
