"""
The image status state machine (Glance's ``Image.valid_state_targets``).

Every status change in the service goes through ``transition``, so an impossible change is
refused in one place, with the error kind the caller's operation calls for.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from .errors import BadRequest, ImageServiceError
from .model import Image, Status

TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset(
        {Status.SAVING, Status.UPLOADING, Status.IMPORTING, Status.ACTIVE, Status.DELETED}
    ),
    Status.SAVING: frozenset({Status.ACTIVE, Status.KILLED, Status.DELETED, Status.QUEUED}),
    Status.UPLOADING: frozenset({Status.IMPORTING, Status.QUEUED, Status.DELETED}),
    Status.IMPORTING: frozenset({Status.ACTIVE, Status.DELETED, Status.QUEUED}),
    Status.ACTIVE: frozenset({Status.PENDING_DELETE, Status.DELETED, Status.DEACTIVATED}),
    Status.DEACTIVATED: frozenset({Status.ACTIVE, Status.DELETED}),
    Status.KILLED: frozenset({Status.DELETED}),
    Status.PENDING_DELETE: frozenset({Status.DELETED, Status.ACTIVE}),
    Status.DELETED: frozenset(),
}

#: Leaving these for a data-bearing status needs both formats (Glance's ValueError).
_NEEDS_FORMATS_FROM = frozenset({Status.QUEUED, Status.UPLOADING})
_NEEDS_FORMATS_TO = frozenset({Status.SAVING, Status.ACTIVE, Status.IMPORTING})


def can_transition(current: Status, target: Status) -> bool:
    return target in TRANSITIONS[current]


def transition(
    image: Image,
    target: Status,
    error: type[ImageServiceError],
    now: datetime,
    **changes: Any,
) -> Image:
    """
    Return ``image`` moved to ``target`` at ``now`` (with ``changes``), or raise ``error``.

    Moving back to ``queued`` forgets the data attributes, as Glance's ``_restore`` does.
    """
    if not can_transition(image.status, target):
        raise error(
            f"Image status transition from {image.status.value} to {target.value} is not allowed"
        )
    if (
        image.status in _NEEDS_FORMATS_FROM
        and target in _NEEDS_FORMATS_TO
        and (image.disk_format is None or image.container_format is None)
    ):
        raise BadRequest(
            "Properties disk_format, container_format must be set prior to saving data."
        )
    if target is not Status.SAVING:
        # Only a ``saving`` image is held by a node's upload.
        changes = {"upload_node": None, **changes}
    if target is Status.QUEUED:
        changes = {
            "size": None,
            "virtual_size": None,
            "checksum": None,
            "os_hash_algo": None,
            "os_hash_value": None,
            "locations": (),
            **changes,
        }
    return attrs.evolve(image, status=target, updated_at=now, **changes)
