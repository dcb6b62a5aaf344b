"""
The catalog's JSON schemas: the ten documents Glance serves, and request validation with them.

``schemas.json`` holds the documents exactly as Glance 33 serves them under
``/v2/schemas/metadefs/`` (captured from a running Glance; Apache-2.0, see
``debian/copyright``).  Glance validates request bodies with the same documents, so they are
also the validators here: one definition of what a namespace, an object, a property, a tag and
a resource type association may look like.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

from jsonschema import Draft4Validator, validators
from jsonschema.exceptions import ValidationError

from ..errors import BadRequest, Forbidden

#: The documents, by the last segment of their URL (``namespace``, ``resource_types``, ...).
DOCUMENTS: Mapping[str, Mapping[str, Any]] = json.loads(
    resources.files(__package__).joinpath("schemas.json").read_text("utf-8")
)

#: What a bulk tag create takes (Glance's ``get_schema_for_list``, which it does not serve).
_TAG_LIST: Mapping[str, Any] = {
    "name": "tags",
    "properties": {
        "tags": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
                "additionalProperties": False,
            }
        }
    },
    "additionalProperties": False,
}


def _property_in_object() -> Mapping[str, Any]:
    """The property schema as Glance checks an object's properties: no ``name`` needed."""
    document = copy.deepcopy(dict(DOCUMENTS["property"]))
    document["required"] = [r for r in document["required"] if r != "name"]
    return document


def _unique_items(
    validator: Any, unique: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """``uniqueItems`` in one pass.  jsonschema's own compares every pair of items that do
    not sort together (numbers beside strings): seconds of the reactor's time for a few
    thousand items in a ``required`` list, from anyone who may send a body."""
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[str] = set()
    for item in instance:
        key = json.dumps(item, sort_keys=True)  # true and 1 stay apart, as JSON Schema says
        if key in seen:
            yield ValidationError(f"{key[:32]} is not unique in the list")
            return
        seen.add(key)


_Validator = validators.extend(Draft4Validator, {"uniqueItems": _unique_items})

_VALIDATORS: Mapping[str, Any] = {
    "namespace": _Validator(DOCUMENTS["namespace"]),
    "object": _Validator(DOCUMENTS["object"]),
    "property": _Validator(DOCUMENTS["property"]),
    "object property": _Validator(_property_in_object()),
    "tag": _Validator(DOCUMENTS["tag"]),
    "tags": _Validator(_TAG_LIST),
    "resource_type_association": _Validator(DOCUMENTS["resource_type"]),
}

#: Attributes a client may not send, per document (Glance's ``_disallowed_properties``).
_READ_ONLY = {
    "namespace": ("self", "schema", "created_at", "updated_at"),
    "object": ("self", "schema", "created_at", "updated_at"),
}
_TIMESTAMPS = ("created_at", "updated_at")


#: What a property definition may hold (Glance's ``PropertyType``): other keys its schema lets
#: through are dropped, as Glance drops them.
PROPERTY_KEYS = (
    "type", "title", "description", "operators", "default", "readonly", "minimum", "maximum",
    "enum", "pattern", "minLength", "maxLength", "confidential", "items", "uniqueItems",
    "minItems", "maxItems", "additionalItems",
)


def property_body(raw: Mapping[str, Any]) -> dict[str, Any]:
    """
    A property definition as Glance keeps it (its ``PropertyType``): known keys only, the
    items of an array only their ``type`` and ``enum``, and a ``default`` as text (Glance
    answers ``"default": "5"`` for a default of 5, ``"True"`` for true, and keeps no list or
    object default).
    """
    body = {key: raw[key] for key in PROPERTY_KEYS if key in raw}
    if isinstance(body.get("items"), dict):
        body["items"] = {k: v for k, v in body["items"].items() if k in ("type", "enum")}
    default = body.get("default")
    if isinstance(default, (list, dict)) or ("default" in body and default is None):
        del body["default"]
    elif "default" in body and not isinstance(default, str):
        body["default"] = str(default)
    return body


def document(name: str) -> dict[str, Any] | None:
    """A fresh copy of a served schema, or ``None`` if there is no such schema."""
    found = DOCUMENTS.get(name)
    return copy.deepcopy(dict(found)) if found is not None else None


def validate(schema: str, body: Any) -> Mapping[str, Any]:
    """
    ``body`` checked as Glance checks it: read-only attributes first (403), then the schema
    (400 naming the first violation, in Glance's words without its schema dump).
    """
    if not isinstance(body, dict):
        raise BadRequest(f"Provided object does not match schema '{schema}': "
                         f"{json.dumps(body)[:64]} is not of type 'object'")
    for key in _READ_ONLY.get(schema, _TIMESTAMPS):
        if key in body:
            raise Forbidden(f"Attribute '{key}' is read-only.")
    errors = _VALIDATORS[schema].iter_errors(body)
    error = min(errors, key=lambda e: (len(e.path), str(e.message)), default=None)
    if error is not None:
        label = "property" if schema == "object property" else schema
        message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
        raise BadRequest(f"Provided object does not match schema '{label}': {message}")
    return body


#: The longest name the catalog keeps (Glance's columns): a namespace's, a definition's, a
#: resource type's, a prefix.  Glance's schemas check some of them; the rest would fail in
#: its database.
MAX_NAME = 80


def check_name(value: Any, what: str, schema: str, addressed: bool = True) -> str:
    """
    A name the catalog can keep: text of 1 to ``MAX_NAME`` characters; if ``addressed`` (a
    URL path segment names it), without ``/``, which no segment can carry (``%2F`` splits it,
    as in Glance, which then cannot reach what it made).
    """
    if not isinstance(value, str) or not value:
        raise BadRequest(f"Provided object does not match schema '{schema}': {what} must be "
                         "a non-empty string")
    if addressed and "/" in value:
        raise BadRequest(f"Provided object does not match schema '{schema}': {what} "
                         f"'{value[:32]}' may not contain '/' (no URL could name it)")
    if len(value) > MAX_NAME:
        raise BadRequest(f"Provided object does not match schema '{schema}': {what} "
                         f"'{value[:32]}...' is longer than {MAX_NAME} characters")
    return value


__all__ = [
    "DOCUMENTS",
    "MAX_NAME",
    "PROPERTY_KEYS",
    "check_name",
    "document",
    "property_body",
    "validate",
]
