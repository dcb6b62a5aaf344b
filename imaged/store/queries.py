"""
List queries as SQL: filters, Glance's visibility rules, sort order and keyset paging.

Pure statement building (no connection, no execution): ``ListQuery`` turns a ``Scope`` and an
``ImageQuery`` into the marker lookup and the page statement the store runs.  Pages are fetched
by keyset (``WHERE (sort keys) after (marker's keys)``), never by offset, so a page costs the
same at any depth.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, Select, and_, bindparam, exists, false, or_, select, true, tuple_
from sqlalchemy.sql.elements import ColumnElement

from ..errors import BadRequest
from ..model import (
    Compare,
    Condition,
    ImageQuery,
    MemberStatus,
    Scope,
    SortDir,
    SortKey,
    Status,
    Visibility,
    VisibilityFilter,
)
from .rows import ENUM_COLUMNS, IMAGE_COLUMNS, IMAGE_SELECT
from .tables import image_members, image_properties, image_tags, images

#: Columns a list may filter on (``Condition.field``).
FILTER_COLUMNS = frozenset(IMAGE_COLUMNS) - {"locations", "upload_node"}

_NULLABLE_SORT_KEYS = frozenset({"name", "container_format", "disk_format", "size"})

_COMPARE = {
    Compare.EQ: operator.eq,
    Compare.NEQ: operator.ne,
    Compare.GT: operator.gt,
    Compare.GTE: operator.ge,
    Compare.LT: operator.lt,
    Compare.LTE: operator.le,
}

#: What every list starts from: live images, hidden ones only when asked for.
_LISTED = and_(
    images.c.deleted == false(),
    images.c.status != Status.KILLED.value,
    images.c.os_hidden == false(),
)
_HIDDEN = and_(
    images.c.deleted == false(),
    images.c.status != Status.KILLED.value,
    images.c.os_hidden == true(),
)


def _column(name: str) -> Column[Any]:
    return images.c[name]


def _sql_value(field: str, value: object) -> object:
    if field in ENUM_COLUMNS and hasattr(value, "value"):
        return value.value
    return value


_LAST_SECOND = datetime.max.replace(microsecond=0)


def _time_clause(column: Column[Any], op: Compare, value: datetime) -> ColumnElement[bool]:
    """Timestamps compare at whole seconds, as they are shown: ``eq:T`` matches anything
    shown as ``T``, ``gt:T`` anything shown later than ``T``."""
    start = value.replace(microsecond=0)
    # The last second there is (9999-12-31T23:59:59) has no next one: it ends at the last
    # microsecond, which only a timestamp in that very microsecond would miss.
    end = start + timedelta(seconds=1) if start < _LAST_SECOND else datetime.max
    return {
        Compare.EQ: and_(column >= start, column < end),
        Compare.NEQ: or_(column < start, column >= end),
        Compare.GT: column >= end,
        Compare.GTE: column >= start,
        Compare.LT: column < start,
        Compare.LTE: column < end,
    }[op]


def condition_clause(condition: Condition) -> ColumnElement[bool]:
    """One filter as SQL."""
    if condition.field not in FILTER_COLUMNS:
        raise BadRequest(f"Unable to filter on {condition.field!r}")
    column = _column(condition.field)
    value, op = condition.value, condition.op
    if op is Compare.IN:
        assert isinstance(value, tuple)
        return column.in_([_sql_value(condition.field, v) for v in value])
    if isinstance(value, datetime):
        return _time_clause(column, op, value)
    value = _sql_value(condition.field, value)
    if value is None or isinstance(value, bool):
        if op is Compare.EQ:
            return column.is_(value)
        if op is Compare.NEQ:
            return column.is_not(value)
        raise BadRequest(f"Unable to compare {condition.field} with {op.value}")
    compare: Any = _COMPARE[op]
    clause: ColumnElement[bool] = compare(column, value)
    return clause


@functools.lru_cache(maxsize=256)
def visibility_rules(
    everything: bool,
    has_project: bool,
    member_status: MemberStatus | None,
    wanted: VisibilityFilter | None,
) -> ColumnElement[bool]:
    """
    Glance's list visibility rules, with the caller's project as the bound parameter
    ``viewer_project`` (supply it when executing).

    Without a ``visibility`` filter a caller sees public images and its own; admins see
    everything except other projects' community images.  ``community`` lists every community
    image; ``private``/``shared`` are restricted to the caller's own unless admin; ``all`` is
    everything the caller may see.  Built once per shape and cached: building SQLAlchemy
    expressions costs more than running a typical page query.
    """
    vis = images.c.visibility
    viewer: Any = bindparam("viewer_project")
    owned: ColumnElement[bool] = images.c.owner == viewer if has_project else false()
    shared_with: ColumnElement[bool] = false()
    if has_project:
        membership = [image_members.c.image_id == images.c.id, image_members.c.member == viewer]
        if member_status is not None:
            membership.append(image_members.c.status == member_status.value)
        shared_with = and_(vis == Visibility.SHARED.value, exists().where(*membership))
    if wanted is None:
        if everything:
            return or_(vis != Visibility.COMMUNITY.value, owned)
        return or_(vis == Visibility.PUBLIC.value, owned, shared_with)
    if wanted is VisibilityFilter.ALL:
        if everything:
            return true()
        return or_(
            vis.in_([Visibility.PUBLIC.value, Visibility.COMMUNITY.value]), owned, shared_with
        )
    if wanted in (VisibilityFilter.PUBLIC, VisibilityFilter.COMMUNITY) or everything:
        return vis == wanted.value
    if wanted is VisibilityFilter.SHARED:
        return or_(and_(vis == wanted.value, owned), shared_with)
    return and_(vis == wanted.value, owned)


def _visibility(scope: Scope, wanted: VisibilityFilter | None) -> ColumnElement[bool]:
    return visibility_rules(
        scope.everything, scope.project is not None, scope.member_status, wanted
    )


def order_by(sort: Sequence[SortKey]) -> list[Any]:
    """Sort clauses with NULL as the smallest value on every database."""
    clauses = []
    for key in sort:
        column = _column(key.key)
        nullable = key.key in _NULLABLE_SORT_KEYS
        if key.direction is SortDir.ASC:
            clauses.append(column.asc().nulls_first() if nullable else column.asc())
        else:
            clauses.append(column.desc().nulls_last() if nullable else column.desc())
    return clauses


def after_marker(sort: Sequence[SortKey], marker: Mapping[Any, Any]) -> ColumnElement[bool]:
    """
    Rows strictly after the marker row in ``sort`` order (NULL sorts lowest).

    A uniform direction over non-NULL values is a row-value comparison, which SQLite and
    PostgreSQL answer with one index range; otherwise the general OR-of-prefixes form.
    """
    values = [marker[k.key] for k in sort]
    directions = {k.direction for k in sort}
    if len(directions) == 1 and all(v is not None for v in values):
        nullable = any(k.key in _NULLABLE_SORT_KEYS for k in sort)
        direction = directions.pop()
        if direction is SortDir.ASC or not nullable:
            left = tuple_(*(_column(k.key) for k in sort))
            right = tuple_(*values)
            return left > right if direction is SortDir.ASC else left < right
    alternatives = []
    for i, key in enumerate(sort):
        prefix = [
            _column(k.key).is_(None) if v is None else _column(k.key) == v
            for k, v in zip(sort[:i], values[:i], strict=False)
        ]
        column, value = _column(key.key), values[i]
        if key.direction is SortDir.ASC:
            step = column.is_not(None) if value is None else column > value
        elif value is None:
            step = false()
        elif key.key in _NULLABLE_SORT_KEYS:
            step = or_(column < value, column.is_(None))
        else:
            step = column < value
        alternatives.append(and_(*prefix, step))
    return or_(*alternatives)


class ListQuery:
    """The statements of one list request: its filters, the marker lookup, the page."""

    def __init__(self, scope: Scope, query: ImageQuery) -> None:
        self.query = query
        self.params = {"viewer_project": scope.project}
        self._scope = scope
        self._where = [
            _HIDDEN if query.os_hidden else _LISTED,
            _visibility(scope, query.visibility),
            *(condition_clause(c) for c in query.conditions),
            *(
                exists().where(image_tags.c.image_id == images.c.id, image_tags.c.value == tag)
                for tag in query.tags
            ),
            *(
                exists().where(
                    image_properties.c.image_id == images.c.id,
                    image_properties.c.name == name,
                    image_properties.c.value == value,
                )
                for name, value in query.properties.items()
            ),
        ]

    def marker(self) -> Select[Any]:
        """The marker image's sort keys, if the caller may see it at all."""
        return select(*(images.c[k.key] for k in self.query.sort)).where(
            images.c.id == self.query.marker,
            images.c.deleted == false(),
            _visibility(self._scope, VisibilityFilter.ALL),
        )

    def page(self, marker: Mapping[Any, Any] | None) -> Select[Any]:
        """One page of image rows, after ``marker``'s keys when given."""
        where = list(self._where)
        if marker is not None:
            where.append(after_marker(self.query.sort, marker))
        return (
            IMAGE_SELECT.where(*where)
            .order_by(*order_by(self.query.sort))
            .limit(self.query.limit)
        )


__all__ = ["FILTER_COLUMNS", "ListQuery", "after_marker", "condition_clause", "order_by"]
