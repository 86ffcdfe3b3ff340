"""Page-number pagination with a client-chosen page size (``?page_size=``, at most 500).

Like the filters, strict: a ``page_size`` that is not a whole number of at least 1 is a 400
naming the parameter (DRF would quietly use the default); an empty one, like an empty filter,
counts as not given. A larger one is cut to 500. A page that does not exist is DRF's 404.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    page_size_query_description = "Number of results per page: 1 to 500 (larger values give 500). Default 50."
    max_page_size = 500

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if not raw:
            return self.page_size
        size = int(raw) if raw.isascii() and raw.isdigit() else 0
        if size < 1:
            raise ValidationError({self.page_size_query_param: ["Use a whole number of at least 1."]})
        return min(size, self.max_page_size)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] in (self.page_query_param, self.page_size_query_param):
                parameter["schema"]["minimum"] = 1
        return parameters
