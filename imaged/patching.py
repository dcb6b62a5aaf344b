"""
Applying an image update: Glance's json-patch semantics for base and extra properties.

Pure functions of the caller, the image and the decoded ``Change`` steps (the wire layer has
already validated each value against the schema); the service runs them inside the metadata
store's transaction, so a patch is applied to the image as it is, not as it was read earlier.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from . import policy
from .context import RequestContext
from .errors import BadRequest, Conflict, Forbidden
from .model import Change, ContainerFormat, DiskFormat, Image, PatchOp, Status, Visibility
from .schemas import MAX_INT, SETTABLE


def coerce_base(name: str, value: Any) -> Any:
    """A base attribute's wire value (already schema-valid) as the model's type."""
    if name == "visibility":
        return Visibility(value)
    if name == "disk_format":
        return None if value is None else DiskFormat(value)
    if name == "container_format":
        return None if value is None else ContainerFormat(value)
    if name == "tags":
        return frozenset(value)
    if name in ("min_disk", "min_ram") and (
        not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INT
    ):
        raise BadRequest(f"Invalid value '{value}' for {name}.")
    return value


def apply_changes(context: RequestContext, image: Image, changes: Sequence[Change]) -> Image:
    """``image`` with every step applied in order (any refusal raises: nothing applies)."""
    for change in changes:
        image = _apply(context, image, change)
    return image


def _apply(context: RequestContext, image: Image, change: Change) -> Image:
    name = change.name
    if name in SETTABLE:
        return _apply_base(context, image, change)
    properties = dict(image.properties)
    if change.op is PatchOp.REMOVE:
        if name not in properties:
            raise Conflict(f"Property {name} does not exist.")
        del properties[name]
    elif change.op is PatchOp.REPLACE:
        if name not in properties:
            raise Conflict(f"Property {name} does not exist.")
        properties[name] = str(change.value)
    else:
        if change.strict_add and name in properties:
            raise Conflict(f"Property {name} already present.")
        properties[name] = str(change.value)
    return attrs.evolve(image, properties=properties)


def _apply_base(context: RequestContext, image: Image, change: Change) -> Image:
    name = change.name
    if change.op is PatchOp.REMOVE:
        raise Forbidden(f"Property {name} may not be removed.")
    value = coerce_base(name, change.value)
    if name == "visibility":
        policy.check_visibility_change(context, value)
    elif name == "owner" and not context.is_admin and value != image.owner:
        raise Forbidden("Owner can't be updated by non-admin.")
    elif (
        name in ("disk_format", "container_format")
        and value != getattr(image, name)
        and image.status not in (Status.QUEUED, Status.IMPORTING)
    ):
        raise Forbidden(f"Attribute {name} can be only replaced for a queued image.")
    return attrs.evolve(image, **{name: value})


__all__ = ["apply_changes", "coerce_base"]
