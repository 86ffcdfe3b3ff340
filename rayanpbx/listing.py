"""One page of a list (extensions or trunks): paging, sorting, filtering and search on the server.

The list pages and their ``rows`` fragment read the same query string::

    ?page=N&page_size=50&sort=number|-number|name|-name|enabled|status&status=all|enabled|disabled
     |registered|unregistered&q=text

Nothing in it can fail a request: an unknown sort or status, a page that is not a number,
a page size over 200 are clamped to what is allowed (a page past the last is the last).

Search is case-insensitive: an extension's number (contains) or name (contains); a trunk's
name or host (contains) or its dial prefix (starts with). A ``contains`` search cannot use a
B-tree index (every row's value is scanned, cheap at 10,000 rows, tens of milliseconds at
100,000), so with a search the matches are sorted rather than the order's index walked; a
prefix search (``number LIKE '12%'``) could use one, but SQLite ignores indexes for ``LIKE``
with ``ESCAPE``, which Django always writes. Without a search, sorting and the paging
``LIMIT`` use the expression indexes of the ``*_list_indexes`` migrations (EXPLAIN on
SQLite: ``SCAN ... USING INDEX ext_list_number`` / ``ext_list_name`` / ``ext_list_enabled``,
no temporary B-tree; 4 ms a page at 100,000 rows). MariaDB has no expression indexes
(Django skips them, warning models.W043): there the name order is plain ``name`` on the
``(name, id)`` index (its collations ignore case), and the number order sorts in memory.

The registration state (status filter and sort) is not in the database: it is the PBX link's
snapshot (``pbx.feed.snapshot()``). The query filters or orders by the extension numbers
(trunk names) the snapshot has in each state: ``number IN (...)`` for up to ``MAX_IN_LIST``
of them, and beyond that ``number IN (SELECT ... FROM json_each(?))`` over one JSON
parameter (``JSON_TABLE`` on MariaDB), so the list may be as long as the registered phones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from django.db import connections, models
from django.db.models import Case, F, IntegerField, Q, Value, When
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce, Length, Lower

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_QUERY_LENGTH = 100
#: Up to this many keys go into ``IN (...)`` as parameters; longer lists (100,000 phones
#: registered) go as one JSON parameter read by the database (SQLite's 32,766 bound
#: variables would refuse them, and a filter silently skipped would show wrong rows).
MAX_IN_LIST = 1_000

#: Registration states in status order: registered first, then trouble, then the rest.
STATUS_RANK = {"registered": 0, "unreachable": 1, "rejected": 1, "failed": 1, "unregistered": 2}
STATUSES = ("all", "enabled", "disabled", "registered", "unregistered")


@dataclass(frozen=True)
class ListSpec:
    """What one list can be sorted by and searched on."""

    live_key: str  # the field the PBX state is keyed by: "extension_number" or "name"
    default_sort: str
    sorts: Mapping[str, tuple[Any, ...]]  # key -> ordering (ascending), "id" is appended
    search: tuple[str, ...]  # field lookups OR-ed together with the query text


EXTENSION_LIST = ListSpec(
    live_key="extension_number",
    default_sort="number",
    sorts={
        # Numbers sort as numbers (2 before 10), names without regard to case.
        "number": (Length("extension_number"), "extension_number"),
        "name": (Lower("name"),),
        "enabled": ("-enabled", Length("extension_number"), "extension_number"),
    },
    search=("extension_number__contains", "name__icontains"),
)
TRUNK_LIST = ListSpec(
    live_key="name",
    default_sort="priority",
    sorts={
        "priority": ("priority", Lower("name")),
        "name": (Lower("name"),),
        "host": (Lower("host"), Lower("name")),
        "enabled": ("-enabled", "priority", Lower("name")),
    },
    search=("name__icontains", "host__icontains", "prefix__startswith"),
)


def _int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        return default
    return max(low, min(high, number))


@dataclass(frozen=True)
class ListQuery:
    """The view asked for, already clamped to what is allowed."""

    page: int
    page_size: int
    sort: str  # "name" or "-name"
    status: str
    q: str
    default_sort: str = ""  # the list's own order, left out of its links

    @classmethod
    def parse(cls, params: Mapping[str, str], spec: ListSpec, *, live: bool) -> ListQuery:
        sort = str(params.get("sort") or spec.default_sort)
        sorts = set(spec.sorts) | ({"status"} if live else set())
        if sort.removeprefix("-") not in sorts:
            sort = spec.default_sort
        status = str(params.get("status") or "all")
        if status not in STATUSES or (status in ("registered", "unregistered") and not live):
            status = "all"
        return cls(
            page=_int(params.get("page"), 1, 1, 10**9),
            page_size=_int(params.get("page_size"), DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE),
            sort=sort,
            status=status,
            q=str(params.get("q") or "").strip()[:MAX_QUERY_LENGTH],
            default_sort=spec.default_sort,
        )

    @property
    def sort_key(self) -> str:
        return self.sort.removeprefix("-")

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")

    def params(self, **changes: Any) -> dict[str, str]:
        """The query string for this view (defaults left out), with some values changed."""
        values = {"page": self.page, "page_size": self.page_size, "sort": self.sort, "status": self.status, "q": self.q}
        values.update(changes)
        defaults = {"page": 1, "page_size": DEFAULT_PAGE_SIZE, "sort": self.default_sort, "status": "all", "q": ""}
        return {k: str(v) for k, v in values.items() if v != defaults.get(k, object())}


def _states(registrations: list[dict[str, Any]] | None, key: str) -> dict[str, list[str]]:
    """The live keys in each registration state, from the PBX snapshot's list."""
    states: dict[str, list[str]] = {}
    for item in registrations or []:
        if isinstance(item, dict) and item.get(key) is not None:
            states.setdefault(str(item.get("state")), []).append(str(item[key]))
    return states


def _unindexed(expression: Any) -> Any:
    """The same order, in a form no index matches: with a search (which reads every row
    anyway), sorting the few matches beats walking the whole index in order and reading
    each row behind it (at 100,000 rows on SQLite: 50 ms rather than 450 ms)."""
    descending = isinstance(expression, str) and expression.startswith("-")
    term = F(expression.removeprefix("-")) if isinstance(expression, str) else expression
    wrapped = Coalesce(term, term)
    return wrapped.desc() if descending else wrapped


def _keys(keys: list[str], vendor: str) -> Any:
    """``keys`` for an ``__in`` lookup: the list itself when short, else a subquery over one
    JSON parameter (SQLite ``json_each``, MariaDB/MySQL ``JSON_TABLE``), any length."""
    if len(keys) <= MAX_IN_LIST:
        return keys
    text = json.dumps(keys)
    if vendor == "sqlite":
        return RawSQL("SELECT value FROM json_each(%s)", [text])
    if vendor == "mysql":
        return RawSQL("SELECT k FROM JSON_TABLE(%s, '$[*]' COLUMNS (k VARCHAR(64) PATH '$')) AS keys_in", [text])
    return keys  # PostgreSQL and others: no JSON form here yet; their parameter limits are higher


def _plain_on_mysql(expression: Any) -> Any:
    """MySQL/MariaDB index no expressions (Django skips those indexes there, models.W043),
    and their default collations already compare without regard to case: ``Lower(name)``
    becomes plain ``name``, which the plain ``(name, id)`` index serves in the same order."""
    if isinstance(expression, Lower) and len(expression.source_expressions) == 1:
        source = expression.source_expressions[0]
        if isinstance(source, F):
            return source.name
    return expression


def _flip(expression: Any) -> Any:
    if isinstance(expression, str):
        return expression[1:] if expression.startswith("-") else f"-{expression}"
    return expression.desc()


@dataclass
class ListResult:
    """One page of rows and the counts the page shows."""

    rows: list[models.Model]
    total: int  # every row
    count: int  # the rows matching the filter and search
    page: int
    pages: int
    query: ListQuery
    spec_sorts: tuple[str, ...] = ()

    @property
    def start(self) -> int:
        return (self.page - 1) * self.query.page_size + 1 if self.count else 0

    @property
    def end(self) -> int:
        return self.start + len(self.rows) - 1 if self.rows else 0

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "count": self.count,
            "page": self.page,
            "pages": self.pages,
            "start": self.start,
            "end": self.end,
            "query": self.query.params(),
        }


def run(
    model: type[models.Model],
    spec: ListSpec,
    query: ListQuery,
    registrations: list[dict[str, Any]] | None = None,
) -> ListResult:
    """Read one page of ``model`` for ``query``; ``registrations``: the PBX snapshot's list."""
    queryset = model.objects.all()
    if query.q:
        condition = Q()
        for lookup in spec.search:
            condition |= Q(**{lookup: query.q})
        queryset = queryset.filter(condition)
    if query.status == "enabled":
        queryset = queryset.filter(enabled=True)
    elif query.status == "disabled":
        queryset = queryset.filter(enabled=False)
    states = _states(registrations, spec.live_key) if registrations is not None else {}
    registered = states.get("registered", [])
    vendor = connections[queryset.db].vendor
    if query.status in ("registered", "unregistered"):
        lookup = {f"{spec.live_key}__in": _keys(registered, vendor)}
        queryset = queryset.filter(**lookup) if query.status == "registered" else queryset.exclude(**lookup)
    if query.sort_key == "status":
        whens = [
            When(**{f"{spec.live_key}__in": _keys(keys, vendor)}, then=Value(STATUS_RANK.get(state, 2)))
            for state, keys in sorted(states.items())
            if keys
        ]
        none_rank = 2 if spec.live_key == "extension_number" else 3  # a trunk that does not register
        rank = Case(*whens, default=Value(none_rank), output_field=IntegerField()) if whens else Value(none_rank)
        ordering: tuple[Any, ...] = (rank, *spec.sorts[spec.default_sort])
    else:
        ordering = spec.sorts[query.sort_key]
    if vendor == "mysql":
        ordering = tuple(_plain_on_mysql(expression) for expression in ordering)
    if query.q:
        ordering = tuple(_unindexed(expression) for expression in ordering)
    if query.descending:
        ordering = tuple(_flip(expression) for expression in ordering)
    queryset = queryset.order_by(*ordering, "-id" if query.descending else "id")
    total = model.objects.count()
    count = queryset.count() if (query.q or query.status != "all") else total
    pages = max(1, -(-count // query.page_size))
    page = min(query.page, pages)
    offset = (page - 1) * query.page_size
    rows = list(queryset[offset : offset + query.page_size])
    return ListResult(
        rows=rows,
        total=total,
        count=count,
        page=page,
        pages=pages,
        query=replace(query, page=page),
        spec_sorts=tuple(spec.sorts),
    )
