"""Count the database queries of one REST write of each kind (create, update, toggle, delete).

Run with a stack's environment (its data directory, and ``REDIS_URL`` or not): it logs in
through Django's test client, then makes each write once with a JWT, inside
``CaptureQueriesContext``. The count covers the whole request: authentication (the user
lookup), the write itself, and the ``status_update`` counts read after commit. Prints one
JSON object: ``{op: {"queries": n, "status": http_status, "sql": [...]}}``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def measure(username: str, password: str) -> dict[str, Any]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rayanpbx.settings")
    import django

    django.setup()
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST="127.0.0.1")
    login = client.post(
        "/api/auth/login", {"username": username, "password": password}, content_type="application/json"
    )
    if login.status_code != 200:
        raise RuntimeError(f"login failed: {login.status_code} {login.content[:200]!r}")
    headers = {"Authorization": f"Bearer {login.json()['access']}"}
    out: dict[str, Any] = {}
    state: dict[str, Any] = {}

    def run(op: str, method: str, path: str, data: Any = None) -> Any:
        with CaptureQueriesContext(connection) as ctx:
            call = getattr(client, method)
            response = call(path, data, content_type="application/json", headers=headers)
        out[op] = {
            "queries": len(ctx.captured_queries),
            "status": response.status_code,
            "sql": [q["sql"] for q in ctx.captured_queries],
        }
        return response

    created = run("create", "post", "/api/extensions", {"extension_number": "99001", "name": "Query count"})
    state["id"] = created.json()["id"]
    run("update", "patch", f"/api/extensions/{state['id']}", {"name": "Query count renamed"})
    run("toggle", "post", f"/api/extensions/{state['id']}/toggle")
    run("delete", "delete", f"/api/extensions/{state['id']}")
    return out


def main() -> None:
    user = os.environ.get("RAYANPBX_ADMIN_USER", "admin")
    password = os.environ["RAYANPBX_ADMIN_PASSWORD"]
    sys.stdout.write(json.dumps(measure(user, password)) + "\n")


if __name__ == "__main__":
    main()
