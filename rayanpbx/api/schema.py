"""OpenAPI generation: every operation documents the error responses it can give.

drf-spectacular documents only the success response. ``PbxAutoSchema`` adds the errors the
shared machinery produces (see ``rayanpbx.api.errors`` for their one shape), decided from the
operation as documented: a request body can be invalid (400) or of the wrong media type
(415); a query parameter can be invalid (400), though an empty one counts as not given
(``allowEmptyValue``); a path parameter or a page number can miss (404); every endpoint can
refuse credentials (401); a write needs a staff user (403); a versioned object's write can
carry ``If-Match`` (412 when stale), and its success responses send an ``ETag``.
Errors specific to one view (such as the login's 429) are declared on that view with
``error_response``. A SIP account's create response also documents the generated ``secret``.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ComponentRegistry, ResolvedComponent
from drf_spectacular.utils import OpenApiResponse
from rest_framework.permissions import SAFE_METHODS, AllowAny

from rayanpbx.api.serializers import SipAccountSerializer

ERROR_COMPONENT = "Error"
ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}

#: The body of every error response (``rayanpbx.api.errors.exception_handler``).
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An error. `fields` appears only on validation errors (400), `current` only on 412.",
    "properties": {
        "error": {
            "type": "string",
            "description": "A machine-readable code, e.g. `invalid`, `not_authenticated`, `not_found`.",
        },
        "detail": {"type": "string", "description": "A human-readable message."},
        "fields": {
            "type": "object",
            "description": "Each invalid field (or `non_field_errors`) with its messages; "
            "list fields give their messages per item index.",
            "additionalProperties": {
                "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "object"}],
            },
        },
        "current": {
            "type": "object",
            "description": "Only on 412 `precondition_failed` (an `If-Match` that is not the object's "
            "current ETag): the object as it is now, in the operation's success shape.",
        },
    },
    "required": ["error", "detail"],
    "additionalProperties": False,
}

BLANK_STRING = {"type": "string", "maxLength": 0}

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid input: malformed JSON, or a body field or query parameter that fails validation.",
    401: "Not authenticated: the credentials or token are missing, invalid or expired.",
    403: "Permission denied: only staff users may change the PBX configuration "
    "(or a cookie-session request lacks its CSRF token).",
    404: "Not found: no object with this id, or no such page.",
    412: "Precondition failed: `If-Match` is not the object's current ETag (someone else changed it); "
    "`current` holds the object as it is now.",
    415: "Unsupported media type: send `application/json`.",
}

#: The versioned object operations: those that send an ETag, and those that check If-Match.
TAGGED_ACTIONS = {"retrieve", "update", "partial_update", "toggle"}
CONDITIONAL_ACTIONS = {"update", "partial_update", "destroy", "toggle"}

IF_MATCH_PARAMETER: dict[str, Any] = {
    "in": "header",
    "name": "If-Match",
    "required": False,
    "schema": {"type": "string"},
    "description": 'The `ETag` the client loaded (e.g. `"12-3"`), or `*`. If the object has changed since, '
    "nothing is written and the answer is 412 with the current object. Omitted: the write is unconditional.",
}

ETAG_HEADER: dict[str, Any] = {
    "schema": {"type": "string"},
    "description": 'The object\'s strong entity tag, `"<id>-<version>"`: send it back as `If-Match`.',
}


def error_response(description: str) -> OpenApiResponse:
    """An error response in the shared shape, for ``@extend_schema(responses={...})``."""
    return OpenApiResponse(response=ERROR_REF, description=description)


def register_error_component(registry: ComponentRegistry) -> None:
    component = ResolvedComponent(
        name=ERROR_COMPONENT, type=ResolvedComponent.SCHEMA, schema=ERROR_SCHEMA, object=ERROR_COMPONENT
    )
    registry.register_on_missing(component)


class PbxAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, plus error responses, empty query values, and field fixes.

    Field fixes: a blank-allowed constrained string is ``anyOf`` (not ``oneOf``) its two
    forms, and a ``UniqueListField`` is ``uniqueItems``.
    """

    def get_operation(
        self, path: str, path_regex: str, path_prefix: str, method: str, registry: ComponentRegistry
    ) -> dict[str, Any] | None:
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        register_error_component(registry)
        responses = operation["responses"]
        for parameter in operation.get("parameters", []):
            if parameter.get("in") == "query":
                # Filters, search, ordering and pagination all read ``?name=`` as not given.
                parameter.setdefault("allowEmptyValue", True)
        if "201" in responses and isinstance(self.get_response_serializers(), SipAccountSerializer):
            self._document_generated_secret(responses["201"])
        self._document_versions(operation)
        for status in self.error_statuses(operation):
            responses.setdefault(
                str(status),
                {"description": ERROR_DESCRIPTIONS[status], "content": {"application/json": {"schema": ERROR_REF}}},
            )
        return operation

    def _versioned(self) -> bool:
        # Imported here: the viewset module imports DRF's views, which load this schema class.
        from extensions.models import Versioned
        from rayanpbx.api.viewsets import PbxObjectViewSet

        model = getattr(getattr(self.view, "queryset", None), "model", None)
        return isinstance(self.view, PbxObjectViewSet) and model is not None and issubclass(model, Versioned)

    def _document_versions(self, operation: dict[str, Any]) -> None:
        """Edit conflicts (``rayanpbx.api.viewsets``): ETag on success, If-Match and its 412."""
        action = getattr(self.view, "action", None)
        if not self._versioned():
            return
        if action in TAGGED_ACTIONS and "200" in operation["responses"]:
            operation["responses"]["200"].setdefault("headers", {})["ETag"] = ETAG_HEADER
        if action in CONDITIONAL_ACTIONS:
            operation.setdefault("parameters", []).append(dict(IF_MATCH_PARAMETER))

    @staticmethod
    def _document_generated_secret(response: dict[str, Any]) -> None:
        content = response.get("content", {}).get("application/json")
        if content is None:
            return
        content["schema"] = {
            "allOf": [
                content["schema"],
                {
                    "type": "object",
                    "properties": {
                        "secret": {
                            "type": "string",
                            "description": "The generated SIP secret, present only when the request omitted "
                            "`secret`. It is shown this once; no other response includes it.",
                        }
                    },
                },
            ]
        }

    def _insert_field_validators(self, field: Any, schema: dict[str, Any]) -> None:
        super()._insert_field_validators(field, schema)
        # A blank-allowed constrained string comes out as oneOf [constrained, empty]; when the
        # constraint accepts "" too (a pattern such as ``^[0-9]*$``), "" matches both branches
        # and oneOf rejects it. Either branch is fine: anyOf.
        alternatives = schema.get("oneOf")
        if getattr(field, "allow_blank", False) and alternatives and alternatives[-1] == BLANK_STRING:
            schema["anyOf"] = schema.pop("oneOf")
        if getattr(field, "unique_items", False) and schema.get("type") == "array":
            schema["uniqueItems"] = True

    def error_statuses(self, operation: dict[str, Any]) -> list[int]:
        """The error statuses the shared machinery can answer this operation with."""
        parameters = operation.get("parameters", [])
        located = {parameter.get("in") for parameter in parameters}
        query = {parameter.get("name") for parameter in parameters if parameter.get("in") == "query"}
        statuses = [401]
        if "requestBody" in operation or "query" in located:
            statuses.append(400)
        if self.method not in SAFE_METHODS and not self._allows_anyone():
            statuses.append(403)
        paginated = self._get_paginator() is not None and "page" in query
        if "path" in located or paginated:
            statuses.append(404)
        if "requestBody" in operation:
            statuses.append(415)
        if any(parameter.get("in") == "header" and parameter.get("name") == "If-Match" for parameter in parameters):
            statuses.append(412)
        return sorted(statuses)

    def _allows_anyone(self) -> bool:
        return all(isinstance(permission, AllowAny) for permission in self.view.get_permissions())
