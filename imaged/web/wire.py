"""
Glance v2's wire format: decoding requests into ``imaged.model`` values, encoding images.

Pure functions of bytes, strings and dicts: no Twisted request objects, so every rule here is
testable on its own.  Where Glance's behaviour is odd but clients depend on it (timestamps
without fractions, ``next`` links starting with ``/v2/images``, the ``eq:`` escape for values
containing a colon), it is kept and the reason noted.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from ..errors import BadRequest, Forbidden
from ..model import (
    SORT_KEYS,
    ByteRange,
    Change,
    Compare,
    Condition,
    ContainerFormat,
    CreateImageRequest,
    DiskFormat,
    Image,
    ImageQuery,
    Member,
    MemberStatus,
    PatchOp,
    QuotaUsage,
    SortDir,
    SortKey,
    Visibility,
    VisibilityFilter,
)
from ..schemas import READ_ONLY, SETTABLE, is_reserved, validate_image_attributes
from .errors import HTTPError

PATCH_V21 = "application/openstack-images-v2.1-json-patch"
PATCH_V20 = "application/openstack-images-v2.0-json-patch"
ACCEPT_PATCH = f"{PATCH_V20}, {PATCH_V21}"


# -- encoding -------------------------------------------------------------------------------


def isotime(value: datetime) -> str:
    """Glance's timestamps: UTC, whole seconds, ``Z``."""
    # isoformat is several times faster than strftime, and lists format two per image.
    return value.isoformat(timespec="seconds") + "Z"



def header(request: Any, name: bytes) -> str | None:
    """A request header as text (HTTP headers are Latin-1), or ``None``."""
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


def image_document(image: Image, show_locations: bool = False) -> dict[str, Any]:
    """
    An image as Glance shows it, plus the seed's ``locations`` key.

    Extra properties appear at the top level, as in Glance.  The seed's ``DefaultResponse`` also
    had a ``properties`` object; it is accepted on create but not echoed: openstacksdk unpacks a
    ``properties`` object over the image's own attributes when it builds a patch, so echoing the
    extras there made its updates of known extras (``os_distro``, ``hw_*``...) silently do
    nothing.  ``locations`` lists where the bytes are only when the operator enabled it, as
    Glance's ``show_multiple_locations``; otherwise it is empty.
    """
    locations: list[dict[str, Any]] = []
    if show_locations and image.location is not None:
        locations.append({"url": image.location, "metadata": {}})
    document: dict[str, Any] = dict(image.properties)
    document.update(
        {
            "id": image.id,
            "name": image.name,
            "status": image.status.value,
            "visibility": image.visibility.value,
            "protected": image.protected,
            "os_hidden": image.os_hidden,
            "checksum": image.checksum,
            "os_hash_algo": image.os_hash_algo,
            "os_hash_value": image.os_hash_value,
            "owner": image.owner,
            "size": image.size,
            "virtual_size": image.virtual_size,
            "min_disk": image.min_disk,
            "min_ram": image.min_ram,
            "disk_format": image.disk_format.value if image.disk_format else None,
            "container_format": (
                image.container_format.value if image.container_format else None
            ),
            "created_at": isotime(image.created_at),
            "updated_at": isotime(image.updated_at),
            "tags": sorted(image.tags),
            "locations": locations,
            "self": f"/v2/images/{image.id}",
            "file": f"/v2/images/{image.id}/file",
            "schema": "/v2/schemas/image",
        }
    )
    return document


def encode_json(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


# -- request bodies ---------------------------------------------------------------------------


def decode_json(body: bytes) -> Any:
    """A JSON body, regardless of Content-Type (as Glance), or a 400 in Glance's words."""
    if not body.strip():
        raise BadRequest("Body expected in request.")
    try:
        document = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("Request body is not valid UTF-8.") from None
    except ValueError:
        raise BadRequest("Malformed JSON in request body.") from None
    if not isinstance(document, (dict, list)):
        raise BadRequest("Unexpected body type. Expected list/dict.")
    return document


def _check_settable_key(key: str) -> None:
    if key in READ_ONLY:
        raise Forbidden(f"Attribute '{key}' is read-only.")
    if is_reserved(key):
        raise Forbidden(f"Attribute '{key}' is reserved.")


def decode_create(document: Any) -> CreateImageRequest:
    """
    A create body as a ``CreateImageRequest``.

    Read-only and reserved keys are refused (403), then everything is validated against the
    image schema (400).  The seed's ``properties`` object is taken as extra properties, under
    the same rules as extra properties given at the top level.
    """
    if not isinstance(document, dict):
        raise BadRequest("Unexpected body type. Expected dict.")
    for key in document:
        _check_settable_key(key)
    attributes = dict(document)
    nested = attributes.pop("properties", None)
    validate_image_attributes(attributes)
    extras = {k: v for k, v in attributes.items() if k not in SETTABLE}
    if nested is not None:
        if not isinstance(nested, dict):
            raise BadRequest(
                "Provided object does not match schema 'image': "
                "'properties' must be an object of extra properties"
            )
        for key in nested:
            _check_settable_key(key)
            if key in SETTABLE or key == "properties":
                raise BadRequest(
                    f"'{key}' is an image attribute, not an extra property: "
                    "set it at the top level."
                )
        validate_image_attributes(nested)
        extras.update(nested)

    def enum_or_none(kind: Any, key: str) -> Any:
        value = attributes.get(key)
        return None if value is None else kind(value)

    return CreateImageRequest(
        id=attributes.get("id"),
        name=attributes.get("name"),
        visibility=enum_or_none(Visibility, "visibility"),
        protected=attributes.get("protected"),
        os_hidden=attributes.get("os_hidden"),
        owner=attributes.get("owner"),
        disk_format=enum_or_none(DiskFormat, "disk_format"),
        container_format=enum_or_none(ContainerFormat, "container_format"),
        min_disk=attributes.get("min_disk"),
        min_ram=attributes.get("min_ram"),
        tags=tuple(attributes.get("tags") or ()),
        properties=extras,
    )


def _decode_pointer(pointer: Any) -> str:
    """A depth-1 JSON pointer's single segment, or a 400 (Glance's pointer rules)."""
    if not isinstance(pointer, str):
        raise BadRequest("Unable to find 'path' in JSON Schema change")
    invalid = BadRequest(f"Invalid JSON pointer for this resource: '{pointer}'")
    if not pointer.startswith("/") or pointer.endswith("/"):
        raise invalid
    segments = pointer[1:].split("/")
    if len(segments) != 1 or not segments[0]:
        raise invalid
    segment = segments[0]
    stripped = segment.replace("~0", "").replace("~1", "")
    if "~" in stripped:
        raise invalid
    return segment.replace("~1", "/").replace("~0", "~")


def _decode_op_v21(raw: Mapping[str, Any]) -> tuple[PatchOp, Any]:
    if "op" not in raw:
        raise BadRequest("Unable to find 'op' in JSON Schema change")
    try:
        op = PatchOp(raw["op"])
    except (ValueError, TypeError):
        raise BadRequest(
            f"Invalid operation: `{raw['op']}`: it must be one of add, replace, remove."
        ) from None
    if "path" not in raw:
        raise BadRequest("Unable to find 'path' in JSON Schema change")
    return op, raw["path"]


def _decode_op_v20(raw: Mapping[str, Any]) -> tuple[PatchOp, Any]:
    found = [op for op in PatchOp if op.value in raw]
    if len(found) != 1:
        raise BadRequest(
            "Operation objects must contain exactly one member named \"add\", \"remove\", "
            "or \"replace\"."
        )
    return found[0], raw[found[0].value]


def decode_patch(content_type: str | None, document: Any) -> list[Change]:
    """
    A json-patch document (either Glance media type) as ``Change`` steps.

    Checks, in Glance's order: media type (415 with ``Accept-Patch``), shape (400), pointer
    (400), read-only/reserved attributes (403), and each value against the schema (400).
    """
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in (PATCH_V21, PATCH_V20):
        raise HTTPError(
            415,
            f"Unsupported Content-Type: '{content_type or ''}'. Use one of: {ACCEPT_PATCH}.",
            {"Accept-Patch": ACCEPT_PATCH},
        )
    if not isinstance(document, list):
        raise BadRequest("Request body must be a JSON array of operation objects.")
    changes = []
    for raw in document:
        if not isinstance(raw, dict):
            raise BadRequest("Operations must be JSON objects.")
        op, pointer = (_decode_op_v21 if media == PATCH_V21 else _decode_op_v20)(raw)
        name = _decode_pointer(pointer)
        if name in READ_ONLY or name in ("id", "properties"):
            raise Forbidden(f"Attribute '{name}' is read-only.")
        if is_reserved(name):
            raise Forbidden(f"Attribute '{name}' is reserved.")
        value = None
        if op is not PatchOp.REMOVE:
            if "value" not in raw:
                raise BadRequest(f"Operation \"{op.value}\" requires a member named \"value\".")
            value = raw["value"]
            validate_image_attributes({name: value})
        changes.append(
            Change(op=op, name=name, value=value, strict_add=media == PATCH_V20)
        )
    return changes


def decode_tag(tag: str) -> str:
    if len(tag) > 255:
        raise BadRequest("Provided object does not match schema 'image': tag is too long.")
    return tag


# -- list queries -----------------------------------------------------------------------------

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
    except ValueError:
        raise BadRequest(f"Invalid timestamp '{text}': expected ISO 8601.") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _time_condition(field: str, value: str) -> Condition:
    op, sep, rest = value.partition(":")
    if sep and op in {c.value for c in Compare} - {"in"}:
        return Condition(field, Compare(op), _parse_time(rest))
    return Condition(field, Compare.EQ, _parse_time(value))


def _int(name: str, value: str, minimum: int = 0) -> int:
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name} param must be an integer") from None
    if number < minimum:
        raise BadRequest(f"{name} param must be positive")
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
            conditions.append(Condition(key, Compare.EQ, _int(key, value)))
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
    params: Mapping[str, Sequence[str]], last_id: str | None, full: bool
) -> dict[str, str]:
    """
    ``first`` and (when the page was full) ``next``, both starting with ``/v2/images``:
    glanceclient GETs ``next`` verbatim against its endpoint.
    """
    pairs = [(k, v) for k, values in params.items() if k != "marker" for v in values]
    links = {"first": "/v2/images" + (f"?{urlencode(pairs)}" if pairs else "")}
    if full and last_id is not None:
        links["next"] = "/v2/images?" + urlencode(pairs + [("marker", last_id)])
    return links


def decode_params(args: Mapping[bytes, Iterable[bytes]]) -> dict[str, list[str]]:
    """Twisted's ``request.args`` as text, or a 400 for bytes that are not UTF-8."""
    try:
        return {
            key.decode("utf-8"): [v.decode("utf-8") for v in values]
            for key, values in args.items()
        }
    except UnicodeDecodeError:
        raise BadRequest("Query parameters must be UTF-8.") from None


# -- data requests ----------------------------------------------------------------------------


def decode_range(header: str | None) -> ByteRange | None:
    """
    A ``Range: bytes=...`` header as a single ``ByteRange``.  Several ranges are a 400 (as
    Glance); anything unparseable is a range nobody can satisfy (416 once the size is known).
    """
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    if "," in spec:
        raise BadRequest("Multiple ranges are not supported.")
    if unit.strip().lower() != "bytes" or "-" not in spec:
        return ByteRange(first=None, last=None, suffix=0)
    first, _, last = (part.strip() for part in spec.partition("-"))
    try:
        if not first:
            return ByteRange(suffix=int(last))
        start = int(first)
        end = int(last) if last else None
    except ValueError:
        return ByteRange(suffix=0)
    if start < 0 or (end is not None and end < start):
        return ByteRange(suffix=0)
    return ByteRange(first=start, last=end)


def declared_size(
    image_size_header: str | None, content_length: str | None
) -> int | None:
    """The upload size the client announced: ``x-openstack-image-size``, else Content-Length."""
    for name, value in (
        ("x-openstack-image-size", image_size_header),
        ("Content-Length", content_length),
    ):
        if value is not None:
            try:
                size = int(value)
            except ValueError:
                raise BadRequest(f"Invalid {name} header: {value!r}") from None
            if size < 0:
                raise BadRequest(f"Invalid {name} header: {value!r}")
            return size
    return None


# -- members ----------------------------------------------------------------------------------


def member_document(member: Member) -> dict[str, Any]:
    return {
        "member_id": member.member_id,
        "image_id": member.image_id,
        "status": member.status.value,
        "created_at": isotime(member.created_at),
        "updated_at": isotime(member.updated_at),
        "schema": "/v2/schemas/member",
    }


def decode_new_member(document: Any) -> str:
    if not isinstance(document, dict) or "member" not in document:
        raise BadRequest("Member to be added not specified.")
    member = document["member"]
    if not isinstance(member, str) or not member.strip():
        raise BadRequest("Member can't be empty.")
    if len(member) > 255:
        raise BadRequest("Member is longer than 255 characters.")
    return member


def decode_member_status(document: Any) -> MemberStatus:
    if not isinstance(document, dict) or "status" not in document:
        raise BadRequest("Status not specified.")
    try:
        return MemberStatus(document["status"])
    except (ValueError, TypeError):
        raise BadRequest(
            "Incorrect request: Status must be one of pending, accepted, rejected."
        ) from None


_MIB = 1024 * 1024


def usage_document(quota: QuotaUsage) -> dict[str, Any]:
    """
    ``GET /v2/info/usage`` as Glance answers it with unified limits: sizes in MiB, counts as
    numbers, ``-1`` for no limit (Keystone's spelling of unlimited).  imaged has no staging
    area, so ``image_stage_total`` is always zero.
    """

    def entry(limit: int | None, usage: int, unit: int = 1) -> dict[str, int]:
        return {"limit": -1 if limit is None else limit // unit, "usage": usage // unit}

    usage = quota.usage
    return {
        "usage": {
            "image_size_total": entry(quota.size_limit, usage.size_total, _MIB),
            "image_stage_total": entry(quota.size_limit, 0, _MIB),
            "image_count_total": entry(quota.count_limit, usage.image_count),
            "image_count_uploading": entry(quota.uploading_limit, usage.uploading),
        }
    }
