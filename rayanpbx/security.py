"""The Content-Security-Policy of every response, and the API docs' own policy.

Every page is built to need nothing inline: scripts are ES modules from ``/static/``, styles
one stylesheet, data for scripts is ``json_script`` (``type="application/json"``, never run),
and scripts style elements only through the CSSOM (``element.style.x = ...``, which CSP
allows). So the policy (``settings.CONTENT_SECURITY_POLICY``, django-csp 4's format, set in
the settings' ``# --- security headers ---`` block) is:

    default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self';
    connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self';
    form-action 'self'; frame-ancestors 'none'

``connect-src 'self'`` covers the page's own WebSocket (``ws:``/``wss:`` to the same host)
in current Chromium and Firefox (CSP Level 3); the browser tests check that pages go Live.

**The API docs** (``/api/docs/``, drf-spectacular's Swagger UI, from the sidecar package,
served locally) render one inline ``<script>`` (the UI's set-up, which carries the CSRF token,
so it differs per request) and one inline ``<style>``. Their template
(``templates/drf_spectacular/swagger_ui.html``, overriding the package's) marks both with
this response's nonce, and that view alone gets :func:`api_docs_policy`: the same policy plus
``'nonce-…'`` for scripts and styles (no ``'unsafe-inline'``) and ``img-src data:`` (Swagger
UI's icons are ``data:`` SVGs). The docs are found by URL name (``api-docs``) in
``request.resolver_match``, so no view needs a decorator.

The other headers come from Django's ``SecurityMiddleware`` and ``XFrameOptionsMiddleware``
(settings block ``# --- security headers ---``): ``X-Frame-Options: DENY``,
``Referrer-Policy: same-origin``, ``X-Content-Type-Options: nosniff``,
``Cross-Origin-Opener-Policy: same-origin``, and behind TLS (``SECURE=1``) HSTS, secure
cookies and the redirect to HTTPS. See docs/security.md.
"""

from __future__ import annotations

from typing import Any

from csp.constants import HEADER, NONCE, SELF
from csp.middleware import CheckableLazyObject, CSPMiddleware, PolicyParts
from csp.utils import build_policy
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

#: URL names whose views get :func:`api_docs_policy` instead.
API_DOCS_VIEWS = frozenset({"api-docs"})


def api_docs_policy() -> dict[str, Any]:
    """The Swagger UI page's directives: the site's policy (``settings.CONTENT_SECURITY_POLICY``)
    with this response's nonce for scripts and styles and ``data:`` images."""
    directives = dict(settings.CONTENT_SECURITY_POLICY["DIRECTIVES"])
    directives["script-src"] = [*directives.get("script-src", [SELF]), NONCE]
    directives["style-src"] = [*directives.get("style-src", [SELF]), NONCE]
    directives["img-src"] = [*directives.get("img-src", [SELF]), "data:"]
    return directives


#: Response attributes with which django-csp's decorators change one response's policy.
_PER_RESPONSE = ("_csp_exempt", "_csp_config", "_csp_update", "_csp_replace")


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware; the views in :data:`API_DOCS_VIEWS` get :func:`api_docs_policy`.

    The usual response (no nonce used, no decorator, no report-only policy, DEBUG off) gets the site's
    policy built once (django-csp builds it anew for every response: about 80 µs, measured in
    docs/security.md); anything else goes through django-csp itself."""

    _cached: tuple[dict[str, Any], str] | None = None

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        config = getattr(settings, "CONTENT_SECURITY_POLICY", None)
        if (
            not config
            or settings.DEBUG  # django-csp leaves the debug 404 and 500 pages without a policy
            or "EXCLUDE_URL_PREFIXES" in config
            or getattr(settings, "CONTENT_SECURITY_POLICY_REPORT_ONLY", None)
            or getattr(request, "_csp_nonce", None) is not None
            or any(hasattr(response, name) for name in _PER_RESPONSE)
            or _is_api_docs(request)
        ):
            return super().process_response(request, response)
        if HEADER not in response:
            response[HEADER] = self._site_policy(config)
        # As django-csp does: a nonce asked for after the header is written is an error.
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)  # type: ignore[attr-defined]
        return response

    def _site_policy(self, config: dict[str, Any]) -> str:
        cached = self._cached
        if cached is None or cached[0] is not config:  # override_settings gives another dict
            cached = (config, build_policy())
            self._cached = cached
        return cached[1]

    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        if not report_only and parts.config is None and _is_api_docs(request):
            parts.config = api_docs_policy()
        return parts


def _is_api_docs(request: HttpRequest) -> bool:
    match = getattr(request, "resolver_match", None)
    return match is not None and match.url_name in API_DOCS_VIEWS
