"""
Glance v2's wire format: decoding requests into ``imaged.model`` values, encoding images.

Pure functions of bytes, strings and dicts: no Twisted request objects, so every rule here is
testable on its own.  Where Glance's behaviour is odd but clients depend on it (timestamps
without fractions, ``next`` links starting with ``/v2/images``, the ``eq:`` escape for values
containing a colon), it is kept and the reason noted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .. import jsontext
from ..errors import BadRequest, Forbidden
from ..model import (
    ByteRange,
    Change,
    ContainerFormat,
    CreateImageRequest,
    DiskFormat,
    Image,
    ImportRequest,
    Location,
    Member,
    MemberStatus,
    PatchOp,
    QuotaUsage,
    StoreInfo,
    Task,
    TaskStatus,
    Visibility,
)
from ..schemas import DEFAULT_SCHEMAS, READ_ONLY, SETTABLE, ImageSchemas, is_reserved
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


def image_document(
    image: Image,
    show_locations: bool = False,
    locations: Sequence[Location] | None = None,
) -> dict[str, Any]:
    """
    An image as Glance shows it.

    Extra properties appear at the top level, as in Glance.  The seed's ``DefaultResponse`` also
    had a ``properties`` object; it is accepted on create but not echoed: openstacksdk unpacks a
    ``properties`` object over the image's own attributes when it builds a patch, so echoing the
    extras there made its updates of known extras (``os_distro``, ``hw_*``...) silently do
    nothing.  ``locations`` is there only when the operator enabled it, as Glance's
    ``show_multiple_locations``; otherwise the key is absent, as in Glance, whose clients
    compare an image's keys with the schema's.

    ``locations`` are the image's copies named after their stores on a multi-store site
    (``None`` elsewhere): then ``stores`` lists them (when there is data) and each shown
    location's metadata names its store, as Glance with ``enabled_backends``.
    """
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
            "self": f"/v2/images/{image.id}",
            "file": f"/v2/images/{image.id}/file",
            "schema": "/v2/schemas/image",
        }
    )
    named = [location.store for location in locations or () if location.store]
    if named and image.has_data:
        document["stores"] = ",".join(named)
    if show_locations:
        if locations is None:
            document["locations"] = [
                {"url": location.url, "metadata": {}} for location in image.locations
            ]
        else:
            document["locations"] = [
                {"url": location.url, "metadata": {"store": location.store}}
                for location in locations
            ]
    return document


def encode_json(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


# -- request bodies ---------------------------------------------------------------------------


#: How deeply a request document may nest.  Glance's deepest is a patch value inside an
#: operation inside the list (3); extra properties are strings.  Parsing and validating
#: recurse, so a bound is what keeps ``[[[[...`` a 400 and not a RecursionError.
MAX_DEPTH = 32


def decode_json(body: bytes) -> Any:
    """
    A JSON body, regardless of Content-Type (as Glance), or a 400 in Glance's words; every
    string in it storable (see ``check_storable``).
    """
    if not body.strip():
        raise BadRequest("Body expected in request.")
    try:
        document = jsontext.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("Request body is not valid UTF-8.") from None
    except RecursionError:
        raise BadRequest(f"JSON in request body is nested deeper than {MAX_DEPTH}.") from None
    except jsontext.NotFinite as e:
        raise BadRequest(f"Malformed JSON in request body: {e}.") from None
    except ValueError:
        raise BadRequest("Malformed JSON in request body.") from None
    if not isinstance(document, (dict, list)):
        raise BadRequest("Unexpected body type. Expected list/dict.")
    check_storable(document)
    return document


def check_storable(document: Any) -> None:
    """
    Refuse (400) a decoded document no database can store the strings of: lone UTF-16
    surrogates (JSON may escape them, ``"\\ud800"``, UTF-8 cannot encode them) and NUL
    characters (PostgreSQL's text refuses them); or that nests deeper than ``MAX_DEPTH``.
    Checked here, once, so SQLite and PostgreSQL give the same answer.  Iterative: the
    document may be as deep as the parser allowed.
    """
    pending: list[tuple[Any, int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, dict):
            if depth > MAX_DEPTH:
                raise BadRequest(f"JSON in request body is nested deeper than {MAX_DEPTH}.")
            for key, item in value.items():
                _check_text(key)
                pending.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > MAX_DEPTH:
                raise BadRequest(f"JSON in request body is nested deeper than {MAX_DEPTH}.")
            pending.extend((item, depth + 1) for item in value)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise BadRequest("Strings in the request may not contain NUL characters.")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(
                "Strings in the request may not contain lone UTF-16 surrogates."
            ) from None


def _check_settable_key(key: str) -> None:
    if key in READ_ONLY:
        raise Forbidden(f"Attribute '{key}' is read-only.")
    if is_reserved(key):
        raise Forbidden(f"Attribute '{key}' is reserved.")


def decode_create(document: Any, schemas: ImageSchemas = DEFAULT_SCHEMAS) -> CreateImageRequest:
    """
    A create body as a ``CreateImageRequest``.

    Read-only and reserved keys are refused (403), then everything is validated against the
    image schema of ``schemas`` (400).  The seed's ``properties`` object is taken as extra
    properties, under the same rules as extra properties given at the top level.
    """
    if not isinstance(document, dict):
        raise BadRequest("Unexpected body type. Expected dict.")
    for key in document:
        _check_settable_key(key)
    attributes = dict(document)
    nested = attributes.pop("properties", None)
    schemas.validate(attributes)
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
        schemas.validate(nested)
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


def decode_patch(
    content_type: str | None, document: Any, schemas: ImageSchemas = DEFAULT_SCHEMAS
) -> list[Change]:
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
            schemas.validate({name: value})
        changes.append(
            Change(op=op, name=name, value=value, strict_add=media == PATCH_V20)
        )
    return changes


def decode_tag(tag: str) -> str:
    if len(tag) > 255:
        raise BadRequest("Provided object does not match schema 'image': tag is too long.")
    return tag


# -- data requests ----------------------------------------------------------------------------


def decode_range(header: str | None, exact: bool = False) -> ByteRange | None:
    """
    A ``Range: bytes=...`` header as a single ``ByteRange``.  Several ranges are a 400 (as
    Glance); anything unparseable is a range nobody can satisfy (416 once the size is known).
    ``exact``: the range must lie inside the image, not be clamped to it.
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
    return ByteRange(first=start, last=end, exact=exact)


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


# -- import and tasks -------------------------------------------------------------------------


def decode_import(document: Any, store_header: str | None = None) -> ImportRequest:
    """
    A ``POST /v2/images/{id}/import`` body, checked as Glance's ``_validate_import_body``:
    a ``method`` object with a ``name`` (400 otherwise); ``stores`` a list of names,
    ``all_stores`` and ``all_stores_must_succeed`` booleans, ``stores`` exclusive of
    ``all_stores`` and of the ``X-Image-Meta-Store`` header (``store_header``).  A
    single-store site ignores well-formed ones, as Glance without ``enabled_backends``
    (tempest's glance-direct test sends ``all_stores``).
    """
    if not isinstance(document, dict):
        raise BadRequest("Unexpected body type. Expected dict.")
    method = document.get("method")
    if not isinstance(method, dict) or not isinstance(method.get("name"), str):
        raise BadRequest("Import request requires a 'method' field with a 'name'.")
    for flag in ("all_stores", "all_stores_must_succeed"):
        if flag in document and not isinstance(document[flag], bool):
            raise BadRequest(f"'{flag}' must be a boolean value.")
    stores = document.get("stores")
    if stores is not None and (
        not isinstance(stores, list) or not all(isinstance(s, str) and s for s in stores)
    ):
        raise BadRequest("'stores' must be a list of store names.")
    if stores and document.get("all_stores"):
        raise BadRequest("'stores' and 'all_stores' are mutually exclusive.")
    if store_header is not None:
        if "stores" in document or document.get("all_stores"):
            raise BadRequest(
                "The X-Image-Meta-Store header and 'stores' or 'all_stores' are mutually "
                "exclusive."
            )
        stores = [store_header]
    texts = {}
    for key in ("uri", "glance_image_id", "glance_region", "glance_service_interface"):
        value = method.get(key)
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"'{key}' must be a string.")
        texts[key] = value
    return ImportRequest(
        method=method["name"],
        uri=texts["uri"],
        glance_image_id=texts["glance_image_id"],
        glance_region=texts["glance_region"],
        glance_service_interface=texts["glance_service_interface"] or "public",
        stores=tuple(stores or ()),
        all_stores=bool(document.get("all_stores", False)),
        all_stores_must_succeed=bool(document.get("all_stores_must_succeed", True)),
    )


def stores_document(stores: Sequence[StoreInfo], detail: bool) -> dict[str, Any]:
    """``/v2/info/stores`` (``detail``: ``/v2/info/stores/detail``) as Glance answers: the
    flags are the strings ``"true"``, present only when true."""
    listed = []
    for store in stores:
        entry: dict[str, Any] = {"id": store.id}
        if store.description:
            entry["description"] = store.description
        if store.default:
            entry["default"] = "true"
        if detail:
            entry["type"] = store.type
            entry["weight"] = store.weight
            entry["properties"] = dict(store.properties)
        listed.append(entry)
    return {"stores": listed}


def _time(value: datetime | None) -> str | None:
    return None if value is None else isotime(value)


def task_document(task: Task, listed: bool = False) -> dict[str, Any]:
    """A task as Glance's tasks API shows it (a list hides input, result and message)."""
    document: dict[str, Any] = {
        "id": task.id,
        "type": task.type,
        "status": task.status.value,
        "owner": task.owner,
        "expires_at": _time(task.expires_at),
        "created_at": isotime(task.created_at),
        "updated_at": isotime(task.updated_at),
        "self": f"/v2/tasks/{task.id}",
        "schema": "/v2/schemas/task",
    }
    if not listed:
        document.update(
            input=dict(task.input),
            result=None if task.result is None else dict(task.result),
            message=task.message,
            image_id=task.image_id,
            request_id=task.request_id,
            user_id=task.user_id,
        )
    return document


def image_task_document(task: Task) -> dict[str, Any]:
    """An entry of ``GET /v2/images/{id}/tasks`` (2.12), Glance's keys plus the progress of a
    running import (``os_imaged_progress``: bytes done and total, total ``null`` if unknown)."""
    return {
        "id": task.id,
        "type": task.type,
        "status": task.status.value,
        "owner": task.owner,
        "input": dict(task.input),
        "result": None if task.result is None else dict(task.result),
        "message": task.message,
        "expires_at": _time(task.expires_at),
        "created_at": isotime(task.created_at),
        "updated_at": isotime(task.updated_at),
        "deleted": False,
        "deleted_at": None,
        "image_id": task.image_id,
        "request_id": task.request_id,
        "user_id": task.user_id,
        "os_imaged_progress": {"done": task.done, "total": task.total},
    }


def decode_task_query(
    args: Mapping[bytes, Any], limits: Any
) -> tuple[TaskStatus | None, str | None, int, str | None, bool]:
    """``GET /v2/tasks``' parameters: ``status``, ``type``, ``limit``, ``marker``,
    ``sort_dir`` (tasks sort by ``created_at``, newest first by default, as Glance)."""
    from .listing import decode_params

    params = {key: values[-1] for key, values in decode_params(args).items() if values}
    status = None
    if "status" in params:
        try:
            status = TaskStatus(params["status"])
        except ValueError:
            raise BadRequest(f"Invalid status value: {params['status']}") from None
    limit = limits.list_limit_default
    if "limit" in params:
        try:
            limit = int(params["limit"])
        except ValueError:
            raise BadRequest("limit param must be an integer") from None
        if limit < 0:
            raise BadRequest("limit param must be positive")
        limit = min(limit, limits.list_limit_max)
    if params.get("sort_key", "created_at") != "created_at":
        raise BadRequest(f"Unsupported sort_key: {params['sort_key']}")
    direction = params.get("sort_dir", "desc")
    if direction not in ("asc", "desc"):
        raise BadRequest(f"Invalid sort direction: {direction}")
    return status, params.get("type"), limit, params.get("marker"), direction == "desc"


def decode_task_create(
    document: Any, schemas: ImageSchemas = DEFAULT_SCHEMAS
) -> tuple[str, CreateImageRequest, dict[str, Any]]:
    """
    A legacy ``POST /v2/tasks`` body: ``{"type": "import", "input": {"import_from": URI,
    "import_from_format": FORMAT, "image_properties": {...}}}``, checked as Glance checks it
    (400 for a wrong type or a missing field); the properties are a create request's, under
    the same rules, and need both formats.
    """
    if not isinstance(document, dict):
        raise BadRequest("Unexpected body type. Expected dict.")
    if document.get("type") != "import":
        raise BadRequest(f"Invalid type value: {document.get('type')!s:.64}")
    task_input = document.get("input")
    if not isinstance(task_input, dict):
        raise BadRequest("Task input must be an object.")
    for field in ("import_from", "import_from_format", "image_properties"):
        if field not in task_input:
            raise BadRequest(f"Input does not contain '{field}' field")
    uri, properties = task_input["import_from"], task_input["image_properties"]
    if not isinstance(uri, str) or not isinstance(task_input["import_from_format"], str):
        raise BadRequest("'import_from' and 'import_from_format' must be strings.")
    if not isinstance(properties, dict):
        raise BadRequest("'image_properties' must be an object.")
    image = decode_create(properties, schemas)
    if image.disk_format is None or image.container_format is None:
        raise BadRequest("'image_properties' must set disk_format and container_format.")
    return uri, image, task_input
