"""
The image attribute definitions, as JSON schemas.

One set of definitions serves three purposes, so they can never disagree: validating create and
update requests, deciding which attributes are read-only or reserved, and the documents served at
``/v2/schemas/*`` (which python-glanceclient uses to validate every image it receives).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import attrs
from jsonschema import Draft4Validator
from jsonschema.exceptions import SchemaError

from .errors import BadRequest
from .model import ContainerFormat, DiskFormat, Status, Visibility

UUID_PATTERN = (
    "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"
)

#: Attributes nobody may set: the service computes them.
READ_ONLY = frozenset(
    {
        "created_at",
        "updated_at",
        "status",
        "checksum",
        "size",
        "virtual_size",
        "os_hash_algo",
        "os_hash_value",
        "direct_url",
        "self",
        "file",
        "schema",
        "stores",
    }
)

#: Attribute names nobody may use, even as extra properties.
RESERVED = frozenset({"location", "locations", "deleted", "deleted_at"})
RESERVED_PREFIX = "os_glance"

#: Base attributes a caller may set (Glance's ``_base_properties`` less the read-only ones).
SETTABLE = frozenset(
    {
        "id",
        "name",
        "visibility",
        "protected",
        "os_hidden",
        "tags",
        "owner",
        "min_disk",
        "min_ram",
        "disk_format",
        "container_format",
    }
)

#: Largest value the integer columns hold (min_disk, min_ram).
MAX_INT = 2**31 - 1

#: The longest extra-property value, in UTF-8 bytes: what Glance's ``image_properties.value``
#: column holds on MySQL (TEXT), so that anything imaged stores, any database Glance runs on
#: can hold (see the adoption path) and every show and list stays small.
MAX_PROPERTY_VALUE = 65535

_BASE_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string", "pattern": UUID_PATTERN, "description": "An identifier for the image"},
    "name": {
        "type": ["null", "string"],
        "maxLength": 255,
        "description": "Descriptive name for the image",
    },
    "status": {
        "type": "string",
        "readOnly": True,
        "enum": [s.value for s in Status],
        "description": "Status of the image",
    },
    "visibility": {
        "type": "string",
        "enum": [v.value for v in Visibility],
        "description": "Scope of image accessibility",
    },
    "protected": {
        "type": "boolean",
        "description": "If true, image will not be deletable.",
    },
    "os_hidden": {
        "type": "boolean",
        "description": "If true, image will not appear in default image list response.",
    },
    "checksum": {
        "type": ["null", "string"],
        "readOnly": True,
        "maxLength": 32,
        "description": "md5 hash of image contents.",
    },
    "os_hash_algo": {
        "type": ["null", "string"],
        "readOnly": True,
        "maxLength": 64,
        "description": "Algorithm to calculate the os_hash_value",
    },
    "os_hash_value": {
        "type": ["null", "string"],
        "readOnly": True,
        "maxLength": 128,
        "description": "Hexdigest of the image contents using the algorithm specified by the "
        "os_hash_algo",
    },
    "owner": {
        "type": ["null", "string"],
        "maxLength": 255,
        "description": "Owner of the image",
    },
    "size": {
        "type": ["null", "integer"],
        "readOnly": True,
        "description": "Size of image file in bytes",
    },
    "virtual_size": {
        "type": ["null", "integer"],
        "readOnly": True,
        "description": "Virtual size of image in bytes",
    },
    "container_format": {
        "type": ["null", "string"],
        "enum": [None] + [c.value for c in ContainerFormat],
        "description": "Format of the container",
    },
    "disk_format": {
        "type": ["null", "string"],
        "enum": [None] + [d.value for d in DiskFormat],
        "description": "Format of the disk",
    },
    "created_at": {
        "type": "string",
        "readOnly": True,
        "description": "Date and time of image registration",
    },
    "updated_at": {
        "type": "string",
        "readOnly": True,
        "description": "Date and time of the last image modification",
    },
    "tags": {
        "type": "array",
        "items": {"type": "string", "maxLength": 255},
        "description": "List of strings related to the image",
    },
    "direct_url": {
        "type": "string",
        "readOnly": True,
        "description": "URL to access the image file kept in external store",
    },
    "min_ram": {
        "type": "integer",
        "description": "Amount of ram (in MB) required to boot image.",
    },
    "min_disk": {
        "type": "integer",
        "description": "Amount of disk space (in GB) required to boot image.",
    },
    "self": {"type": "string", "readOnly": True, "description": "An image self url"},
    "file": {"type": "string", "readOnly": True, "description": "An image file url"},
    "stores": {
        "type": "string",
        "readOnly": True,
        "description": "Store in which image data resides.",
    },
    "schema": {"type": "string", "readOnly": True, "description": "An image schema url"},
    "locations": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "url": {"type": "string", "maxLength": 255},
                "metadata": {"type": "object"},
            },
            "required": ["url", "metadata"],
        },
        "description": "A set of URLs to access the image file kept in external store",
    },
}

#: Glance's default ``schema-image.json`` custom properties; ``is_base: false`` makes
#: glanceclient patch them with ``add`` rather than ``replace``.
GLANCE_CUSTOM_PROPERTIES: Mapping[str, Any] = {
    "kernel_id": {
        "type": ["null", "string"],
        "pattern": UUID_PATTERN,
        "description": "ID of image stored in Glance that should be used as the kernel when "
        "booting an AMI-style image.",
        "is_base": False,
    },
    "ramdisk_id": {
        "type": ["null", "string"],
        "pattern": UUID_PATTERN,
        "description": "ID of image stored in Glance that should be used as the ramdisk when "
        "booting an AMI-style image.",
        "is_base": False,
    },
    "instance_uuid": {
        "type": "string",
        "description": "Metadata which can be used to record which instance this image is "
        "associated with. (Informational only, does not create an instance snapshot.)",
        "is_base": False,
    },
    "architecture": {
        "type": "string",
        "description": "Operating system architecture as specified in "
        "https://docs.openstack.org/python-glanceclient/latest/cli/property-keys.html",
        "is_base": False,
    },
    "os_distro": {
        "type": "string",
        "description": "Common name of operating system distribution as specified in "
        "https://docs.openstack.org/python-glanceclient/latest/cli/property-keys.html",
        "is_base": False,
    },
    "os_version": {
        "type": "string",
        "description": "Operating system version as specified by the distributor.",
        "is_base": False,
    },
    "description": {
        "type": "string",
        "description": "A human-readable string describing this image.",
        "is_base": False,
    },
    "cinder_encryption_key_id": {
        "type": "string",
        "description": "Identifier in the OpenStack Key Management Service for the encryption "
        "key for the Block Storage Service to use when mounting a volume created from this "
        "image",
        "is_base": False,
    },
    "cinder_encryption_key_deletion_policy": {
        "type": "string",
        "enum": ["on_image_deletion", "do_not_delete"],
        "description": "States the condition under which the Image Service will delete the "
        "object associated with the 'cinder_encryption_key_id' image property.",
        "is_base": False,
    },
}


def _image_schema(custom: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": "image",
        "properties": {**_BASE_PROPERTIES, **custom},
        "additionalProperties": {"type": "string"},
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


def _paged_collection(name: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """A paged list of ``item`` (images, tasks), as Glance's collection schemas."""
    return {
        "name": name,
        "properties": {
            name: {"type": "array", "items": item},
            "schema": {"type": "string"},
            "first": {"type": "string"},
            "next": {"type": "string"},
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


MEMBER_SCHEMA: Mapping[str, Any] = {
    "name": "member",
    "properties": {
        "member_id": {"type": "string", "description": "An identifier for the image member"},
        "image_id": {
            "type": "string",
            "pattern": UUID_PATTERN,
            "description": "An identifier for the image",
        },
        "created_at": {"type": "string", "description": "Date and time of image member creation"},
        "updated_at": {
            "type": "string",
            "description": "Date and time of last modification of image member",
        },
        "status": {
            "type": "string",
            "enum": ["pending", "accepted", "rejected"],
            "description": "The status of this image member",
        },
        "schema": {"type": "string", "readOnly": True},
    },
}

MEMBERS_SCHEMA: Mapping[str, Any] = {
    "name": "members",
    "properties": {
        "members": {"type": "array", "items": MEMBER_SCHEMA},
        "schema": {"type": "string"},
    },
    "links": [{"rel": "describedby", "href": "{schema}"}],
}


TASK_SCHEMA: Mapping[str, Any] = {
    "name": "task",
    "properties": {
        "id": {"type": "string", "pattern": UUID_PATTERN,
               "description": "An identifier for the task"},
        "type": {"type": "string", "enum": ["import", "api_image_import"],
                 "description": "The type of task represented by this content"},
        "status": {"type": "string", "enum": ["pending", "processing", "success", "failure"],
                   "description": "The current status of this task"},
        "input": {"type": ["null", "object"],
                  "description": "The parameters required by task, JSON blob"},
        "result": {"type": ["null", "object"], "description": "The result of current task, "
                   "JSON blob"},
        "owner": {"type": ["null", "string"],
                  "description": "An identifier for the owner of this task"},
        "message": {"type": "string", "description": "Human-readable informative message "
                    "only included when appropriate (usually on failure)"},
        "image_id": {"type": ["null", "string"], "description": "Image associated with the "
                     "task"},
        "request_id": {"type": ["null", "string"], "description": "Request ID of the "
                       "request that created the task"},
        "user_id": {"type": ["null", "string"], "description": "User associated with the "
                    "task"},
        "expires_at": {"type": ["null", "string"], "description": "Datetime when this "
                       "resource would be subject to removal"},
        "created_at": {"type": "string", "description": "Datetime when this resource was "
                       "created"},
        "updated_at": {"type": "string", "description": "Datetime when this resource was "
                       "updated"},
        "self": {"type": "string"},
        "schema": {"type": "string"},
    },
    "links": [
        {"rel": "self", "href": "{self}"},
        {"rel": "describedby", "href": "{schema}"},
    ],
}

TASKS_SCHEMA: Mapping[str, Any] = _paged_collection("tasks", TASK_SCHEMA)


class SchemaFileError(ValueError):
    """A ``schema-image.json`` imaged cannot use, in words naming the property."""


#: JSON types an optional property's schema may allow: extra properties are strings (Glance's
#: ``additionalProperties``), and ``null`` is how a client asks for one to be removed.
_PROPERTY_TYPES = frozenset({"string", "null"})


def _check_custom(custom: Any) -> dict[str, Any]:
    """Glance's ``schema-image.json`` format (property name to JSON schema), checked."""
    if not isinstance(custom, dict):
        raise SchemaFileError("the file must hold a JSON object of property schemas")
    for name, schema in custom.items():
        if name in _BASE_PROPERTIES or name in READ_ONLY or is_reserved(name):
            raise SchemaFileError(f"'{name}' is an image attribute, not an optional property")
        if len(name) > 255:
            raise SchemaFileError(f"'{name[:32]}...' is longer than 255 characters")
        if not isinstance(schema, dict):
            raise SchemaFileError(f"'{name}': a property's schema must be a JSON object")
        kinds = schema.get("type", "string")
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not isinstance(kinds, list) or "string" not in kinds or not (
            set(kinds) <= _PROPERTY_TYPES
        ):
            raise SchemaFileError(
                f"'{name}': type must be \"string\" or [\"null\", \"string\"] "
                "(extra properties are strings)"
            )
        try:
            Draft4Validator.check_schema(schema)
        except SchemaError as e:
            raise SchemaFileError(f"'{name}': not a valid JSON schema: {e.message}") from None
    return copy.deepcopy(custom)


def load_custom_properties(path: str) -> dict[str, Any]:
    """Glance's ``schema-image.json`` from ``path``; ``SchemaFileError`` says what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except OSError as e:
        raise SchemaFileError(str(e)) from None
    except ValueError as e:
        raise SchemaFileError(f"not valid JSON: {e}") from None
    return _check_custom(document)


@attrs.frozen
class ImageSchemas:
    """
    The documents at ``/v2/schemas/*`` and the validator of image attributes, built from one
    set of optional properties so the two never disagree.

    ``custom`` is Glance's ``schema-image.json``: optional properties the schema describes (and
    glanceclient then validates and patches with ``add``).  The default is the file a packaged
    Glance ships; an operator's own (``--schema-image``) replaces it whole, as Glance's does.
    """

    custom: Mapping[str, Any] = attrs.field(
        factory=lambda: copy.deepcopy(GLANCE_CUSTOM_PROPERTIES), converter=_check_custom
    )
    _documents: Mapping[str, Mapping[str, Any]] = attrs.field(init=False)
    _validator: Draft4Validator = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        image = _image_schema(self.custom)
        documents = {
            "image": image,
            "images": _paged_collection("images", image),
            "member": MEMBER_SCHEMA,
            "members": MEMBERS_SCHEMA,
            "task": TASK_SCHEMA,
            "tasks": TASKS_SCHEMA,
        }
        object.__setattr__(self, "_documents", documents)
        object.__setattr__(self, "_validator", Draft4Validator(image))

    def __contains__(self, name: object) -> bool:
        return name in self._documents

    def document(self, name: str) -> dict[str, Any]:
        """A fresh copy of a schema, safe to serialise or modify."""
        return copy.deepcopy(dict(self._documents[name]))

    def validate(self, attributes: Mapping[str, Any]) -> None:
        """
        Check attribute values against the image schema, as Glance does for create and patch.

        Raises ``BadRequest`` naming the first violation.
        """
        for key, value in attributes.items():
            if len(key) > 255:
                raise BadRequest(
                    "Provided object does not match schema 'image': "
                    f"property name '{key[:32]}...' is longer than 255 characters"
                )
            if isinstance(value, str) and len(value) > MAX_PROPERTY_VALUE // 4 and (
                len(value.encode("utf-8", "surrogatepass")) > MAX_PROPERTY_VALUE
            ):
                raise BadRequest(
                    "Provided object does not match schema 'image': "
                    f"the value of '{key[:32]}' is longer than {MAX_PROPERTY_VALUE} bytes"
                )
        errors = self._validator.iter_errors(dict(attributes))
        error = next(iter(sorted(errors, key=str)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.path)
            detail = f"{error.message}" + (f" (at '{where}')" if where else "")
            raise BadRequest(f"Provided object does not match schema 'image': {detail}")
        for key in ("min_ram", "min_disk"):
            value = attributes.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                if value < 0:
                    raise BadRequest(f"Invalid value '{value}' for {key}: must be >= 0.")
                if value > MAX_INT:
                    raise BadRequest(f"Invalid value '{value}' for {key}: must be <= {MAX_INT}.")


def is_reserved(name: str) -> bool:
    return name in RESERVED or name.startswith(RESERVED_PREFIX)


#: The schemas of a Glance with its packaged ``schema-image.json``.
DEFAULT_SCHEMAS = ImageSchemas()
