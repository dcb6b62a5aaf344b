"""
List requests: Glance's query parameters decoded into an ``ImageQuery``, and the paging links.

Filters, sort keys and directions, ``limit`` and ``marker`` as Glance reads them, with its
errors (400) for anything it refuses; ``eq:``/``in:`` and the time comparisons keep Glance's
quirks (quoted commas, whole-second timestamps) so that clients see the same pages.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import urlencode

from ..errors import BadRequest
from ..model import (
    SORT_KEYS,
    Compare,
    Condition,
    ImageQuery,
    MemberStatus,
    SortDir,
    SortKey,
    VisibilityFilter,
)
from ..schemas import MAX_INT

_EXACT_FILTERS = ("name", "id", "status", "container_format", "disk_format")
_TIME_FILTERS = ("created_at", "updated_at")
_PLAIN_COLUMN_FILTERS = ("owner", "checksum", "os_hash_value")
_INT_COLUMN_FILTERS = ("min_ram", "min_disk")
_MEMBER_STATUS = ("accepted", "pending", "rejected", "all")
_PAGING = ("limit", "marker", "sort", "sort_key", "sort_dir")


def _split_in(value: str) -> tuple[str, ...]:
    """``a,b,"c,d"`` -> ('a', 'b', 'c,d'): Glance quotes values that contain commas."""
    try:
        return tuple(next(csv.reader([value], skipinitialspace=True)))
    except (csv.Error, StopIteration):
        raise BadRequest(f"Invalid filter value {value}. The quote is not closed.") from None


def _exact_condition(field: str, value: str) -> Condition:
    """``v``, ``eq:v`` or ``in:a,b``; any other ``op:`` is refused, as Glance does."""
    op, sep, rest = value.partition(":")
    if not sep:
        return Condition(field, Compare.EQ, value)
    if op == "eq":
        return Condition(field, Compare.EQ, rest)
    if op == "in":
        return Condition(field, Compare.IN, _split_in(rest))
    raise BadRequest(f"Unable to filter by unknown operator '{op}'.")


def _parse_time(text: str) -> datetime:
    candidate = text.strip()
    if candidate.endswith("Z"):
        candidate = candidate[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(candidate)
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        # OverflowError: a valid time whose UTC lies outside years 1-9999, which neither
        # Python nor the databases hold (9999-12-31T23:59:59-01:00).
        raise BadRequest(f"Invalid timestamp '{text}': expected ISO 8601.") from None
    return parsed


def _time_condition(field: str, value: str) -> Condition:
    op, sep, rest = value.partition(":")
    if sep and op in {c.value for c in Compare} - {"in"}:
        return Condition(field, Compare(op), _parse_time(rest))
    return Condition(field, Compare.EQ, _parse_time(value))


#: The largest value of the columns integer filters compare with: sizes are 64-bit, the
#: ``min_*`` columns 32-bit (as Glance's).  A larger filter value is a 400, not a driver error.
MAX_SIZE = 2**63 - 1


def _int(name: str, value: str, minimum: int = 0, maximum: int = MAX_SIZE) -> int:
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name} param must be an integer") from None
    if number < minimum:
        raise BadRequest(f"{name} param must be positive")
    if number > maximum:
        raise BadRequest(f"{name} param must be at most {maximum}")
    return number


def _bool(name: str, value: str) -> bool:
    """Glance's ``protected`` filter: exactly ``true`` or ``false``."""
    if value not in ("true", "false"):
        raise BadRequest(f"Invalid value '{value}' for {name}: must be 'true' or 'false'.")
    return value == "true"


_TRUE = frozenset({"1", "t", "true", "on", "y", "yes"})
_FALSE = frozenset({"0", "f", "false", "off", "n", "no"})


def _lenient_bool(name: str, value: str) -> bool:
    """
    Glance's ``os_hidden`` filter (oslo's strict ``bool_from_string``): any case of the usual
    spellings.  openstacksdk's ``find_image`` sends ``os_hidden=True``.
    """
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise BadRequest(f"Invalid value '{value}' for {name}: must be a boolean.")


def _sorting(params: Mapping[str, Sequence[str]]) -> list[SortKey]:
    """``sort=k:dir,...`` or ``sort_key``/``sort_dir`` lists, with the tie-breakers appended."""
    sort = params.get("sort", [])
    keys = params.get("sort_key", [])
    dirs = params.get("sort_dir", [])
    chosen: list[SortKey] = []
    if sort and (keys or dirs):
        raise BadRequest("The 'sort' argument is not supported with 'sort_key' or 'sort_dir'.")
    if sort:
        for item in ",".join(sort).split(","):
            key, _, direction = item.strip().partition(":")
            chosen.append(SortKey(_sort_key(key), _sort_dir(direction or "desc")))
    elif keys or dirs:
        if len(dirs) > 1 and len(dirs) != len(keys):
            raise BadRequest("Number of sort dirs does not match the number of sort keys")
        keys = keys or ["created_at"]
        directions = list(dirs) * len(keys) if len(dirs) == 1 else dirs or ["desc"] * len(keys)
        pairs = zip(keys, directions, strict=True)
        chosen = [SortKey(_sort_key(k), _sort_dir(d)) for k, d in pairs]
    else:
        chosen = [SortKey("created_at", SortDir.DESC)]
    present = {k.key for k in chosen}
    if len(present) != len(chosen):
        raise BadRequest("Sort keys must not be repeated.")
    for tie_breaker in ("created_at", "id"):
        if tie_breaker not in present:
            chosen.append(SortKey(tie_breaker, chosen[0].direction))
    return chosen


def _sort_key(key: str) -> str:
    if key not in SORT_KEYS:
        raise BadRequest(f"Invalid sort key: {key}. It must be one of: {', '.join(SORT_KEYS)}.")
    return key


def _sort_dir(direction: str) -> SortDir:
    try:
        return SortDir(direction)
    except ValueError:
        raise BadRequest(
            f"Invalid sort direction: {direction}. It must be one of: asc, desc."
        ) from None


def decode_query(
    params: Mapping[str, Sequence[str]], default_limit: int, max_limit: int
) -> ImageQuery:
    """``GET /v2/images`` query parameters as an ``ImageQuery`` (contract §3.3)."""
    limit = default_limit
    if "limit" in params:
        limit = min(_int("limit", params["limit"][-1]), max_limit)
    conditions: list[Condition] = []
    properties: dict[str, str] = {}
    tags: list[str] = []
    visibility: VisibilityFilter | None = None
    member_status: MemberStatus | None = MemberStatus.ACCEPTED
    os_hidden = False
    for key, values in params.items():
        if key in _PAGING:
            continue
        value = values[-1]
        if key == "changes-since":
            raise BadRequest("The 'changes-since' filter is no longer available on v2.")
        elif key in _EXACT_FILTERS:
            conditions.append(_exact_condition(key, value))
        elif key in _TIME_FILTERS:
            conditions.append(_time_condition(key, value))
        elif key == "size":
            # The size column itself (interop's test_list_images_param_size), not an extra
            # property called "size".
            conditions.append(Condition("size", Compare.EQ, _int("size", value)))
        elif key == "size_min":
            conditions.append(Condition("size", Compare.GTE, _int("size_min", value)))
        elif key == "size_max":
            conditions.append(Condition("size", Compare.LTE, _int("size_max", value)))
        elif key == "visibility":
            try:
                visibility = VisibilityFilter(value)
            except ValueError:
                raise BadRequest(
                    f"Invalid visibility value: {value}. It must be one of: "
                    + ", ".join(v.value for v in VisibilityFilter)
                ) from None
        elif key == "member_status":
            if value not in _MEMBER_STATUS:
                raise BadRequest(
                    f"Invalid status value: {value}. It must be one of: "
                    + ", ".join(_MEMBER_STATUS)
                )
            member_status = None if value == "all" else MemberStatus(value)
        elif key == "tag":
            tags.extend(values)
        elif key == "protected":
            conditions.append(Condition("protected", Compare.EQ, _bool("protected", value)))
        elif key == "os_hidden":
            os_hidden = _lenient_bool("os_hidden", value)
        elif key in _PLAIN_COLUMN_FILTERS:
            conditions.append(Condition(key, Compare.EQ, value))
        elif key in _INT_COLUMN_FILTERS:
            conditions.append(Condition(key, Compare.EQ, _int(key, value, maximum=MAX_INT)))
        else:
            properties[key] = value
    return ImageQuery(
        limit=limit,
        sort=tuple(_sorting(params)),
        marker=params["marker"][-1] if "marker" in params else None,
        conditions=tuple(conditions),
        properties=properties,
        tags=tuple(tags),
        visibility=visibility,
        member_status=member_status,
        os_hidden=os_hidden,
    )


def page_links(
    params: Mapping[str, Sequence[str]],
    last_id: str | None,
    full: bool,
    base: str = "/v2/images",
) -> dict[str, str]:
    """
    ``first`` and (when the page was full) ``next``, both starting with ``base``: glanceclient
    GETs ``next`` verbatim against its endpoint.
    """
    pairs = [(k, v) for k, values in params.items() if k != "marker" for v in values]
    links = {"first": base + (f"?{urlencode(pairs)}" if pairs else "")}
    if full and last_id is not None:
        links["next"] = f"{base}?" + urlencode(pairs + [("marker", last_id)])
    return links


def decode_params(args: Mapping[bytes, Iterable[bytes]]) -> dict[str, list[str]]:
    """Twisted's ``request.args`` as text, or a 400 for bytes that are not UTF-8 or hold a NUL
    (no database stores it; PostgreSQL refuses it outright)."""
    try:
        params = {
            key.decode("utf-8"): [v.decode("utf-8") for v in values]
            for key, values in args.items()
        }
    except UnicodeDecodeError:
        raise BadRequest("Query parameters must be UTF-8.") from None
    for key, values in params.items():
        if "\x00" in key or any("\x00" in value for value in values):
            raise BadRequest("Query parameters may not contain NUL characters.")
    return params
