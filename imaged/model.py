"""
Value types of the image service: enums, the image record and the requests that change it.

These are the Pythonic form of the seed's Go types (``Status``, ``Visibility``, ``DiskFormat``,
``ContainerFormat``, ``VersionStatus``, ``Version``, ``Link``, ``CreateImageRequest``,
``DefaultResponse``).  They are plain immutable values: no HTTP, no SQL, no files, so that the
web layer, the service and every store can share them without depending on each other.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from twisted.web.iweb import IBodyProducer


class Status(enum.StrEnum):
    """Where an image is in its life (Glance's ``valid_state_targets``)."""

    QUEUED = "queued"
    SAVING = "saving"
    ACTIVE = "active"
    KILLED = "killed"
    DELETED = "deleted"
    PENDING_DELETE = "pending_delete"
    UPLOADING = "uploading"
    IMPORTING = "importing"
    DEACTIVATED = "deactivated"


class Visibility(enum.StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"
    SHARED = "shared"
    COMMUNITY = "community"


class DiskFormat(enum.StrEnum):
    """Glance's default ``disk_formats`` (the seed's raw, qcow2 and iso among them)."""

    AMI = "ami"
    ARI = "ari"
    AKI = "aki"
    VHD = "vhd"
    VHDX = "vhdx"
    VMDK = "vmdk"
    RAW = "raw"
    QCOW2 = "qcow2"
    VDI = "vdi"
    ISO = "iso"
    PLOOP = "ploop"


class ContainerFormat(enum.StrEnum):
    """Glance's default ``container_formats`` (the seed's bare among them)."""

    AMI = "ami"
    ARI = "ari"
    AKI = "aki"
    BARE = "bare"
    OVF = "ovf"
    OVA = "ova"
    DOCKER = "docker"
    COMPRESSED = "compressed"


class MemberStatus(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class VersionStatus(enum.StrEnum):
    CURRENT = "CURRENT"
    SUPPORTED = "SUPPORTED"
    DEPRECATED = "DEPRECATED"


class SortDir(enum.StrEnum):
    ASC = "asc"
    DESC = "desc"


@attrs.frozen
class Link:
    href: str
    rel: str | None = None
    type: str | None = None


@attrs.frozen
class Version:
    id: str
    status: VersionStatus
    links: Sequence[Link] = ()


@attrs.frozen
class StoredBlob:
    """
    What a blob store reports after it has durably stored an image's bytes.

    ``location`` is the store's own opaque address (a ``file://`` URL for the file store); the
    service keeps it in the image record and hands it back for reads and deletes.
    """

    size: int
    checksum: str
    hash_algo: str
    hash_value: str
    location: str


@attrs.frozen
class Location:
    """
    One copy of an image's data: the store's own address for it (``url``) and the name of
    the configured store that holds it (``store``; empty for a copy recorded before its store
    had a name, which ``imaged.stores.Stores`` finds by the address).
    """

    url: str
    store: str = ""


@attrs.frozen
class Health:
    """What ``IImageService.health`` found: ``problem`` when the node cannot serve (the
    health check's 503), and ``notes`` on what is down without stopping it (a store among
    several)."""

    problem: str | None = None
    notes: tuple[str, ...] = ()


@attrs.frozen
class StoreInfo:
    """What ``/v2/info/stores[/detail]`` says of one configured store."""

    id: str
    description: str = ""
    default: bool = False
    type: str = "file"
    weight: int = 0
    #: Its configuration, as the detail shows it (never a secret).
    properties: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Image:
    """
    One image record, as the metadata store keeps it.

    ``properties`` are Glance's *extra properties* (string to string).  ``locations`` are where
    the blob stores put the bytes, one per store holding a copy (staged data is the one copy
    of an image ``uploading``); internal, and shown only when an operator asks for it.
    """

    id: str
    status: Status
    visibility: Visibility
    created_at: datetime
    updated_at: datetime
    name: str | None = None
    owner: str | None = None
    protected: bool = False
    os_hidden: bool = False
    disk_format: DiskFormat | None = None
    container_format: ContainerFormat | None = None
    min_disk: int = 0
    min_ram: int = 0
    size: int | None = None
    virtual_size: int | None = None
    checksum: str | None = None
    os_hash_algo: str | None = None
    os_hash_value: str | None = None
    tags: frozenset[str] = frozenset()
    properties: Mapping[str, str] = attrs.field(factory=dict)
    locations: tuple[Location, ...] = ()
    #: While ``saving``: the claim of the upload that holds the image there, ``<node>#<nonce>``
    #: (the node is one imaged process), so that recovery can tell a live upload from one
    #: whose node died, and a finishing upload can tell it still holds the image.
    upload_node: str | None = None

    @property
    def location(self) -> str | None:
        """The address of the first copy (the one copy of staged or single-store data)."""
        return self.locations[0].url if self.locations else None

    @property
    def stores(self) -> tuple[str, ...]:
        """The names of the stores holding a copy, in the order the copies were made."""
        return tuple(location.store for location in self.locations)

    @property
    def has_data(self) -> bool:
        return bool(self.locations) and self.status in (Status.ACTIVE, Status.DEACTIVATED)


def claim_node(claim: str) -> str:
    """The node of an upload's claim (``<node>#<nonce>``)."""
    return claim.partition("#")[0]


@attrs.frozen
class SavingUpload:
    """An image ``saving``: the claim of the upload holding it, and when its node last spoke."""

    image_id: str
    claim: str | None
    updated_at: datetime
    #: The claim's node's last heartbeat; ``None`` if it never sent one (or was forgotten).
    node_seen: datetime | None

    @property
    def node(self) -> str | None:
        return claim_node(self.claim) if self.claim is not None else None


@attrs.frozen
class Member:
    """A project an image is shared with, and what that project said about it."""

    image_id: str
    member_id: str
    status: MemberStatus
    created_at: datetime
    updated_at: datetime


#: A read-check-write of one image, run by ``IMetadataStore.modify`` inside its transaction:
#: ``mutate(image, membership)`` returns the image to write (or raises to write nothing).
Mutation = Callable[[Image, Member | None], Image]


class TaskStatus(enum.StrEnum):
    """Where an asynchronous task (an import) is (Glance's task statuses)."""

    PENDING = "pending"
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILURE = "failure"


@attrs.frozen
class Task:
    """
    One asynchronous piece of work on an image, as Glance's tasks API shows it (type
    ``api_image_import`` for the interoperable import).

    ``input`` and ``result`` are JSON documents.  ``node`` is the claim of the process running
    it (``<node>#<nonce>``, as an upload's), so that a task whose node died is found and ended
    rather than lost or run twice.  ``done`` and ``total`` are bytes, for a progress bar.
    """

    id: str
    type: str
    status: TaskStatus
    owner: str | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    image_id: str | None = None
    input: Mapping[str, Any] = attrs.field(factory=dict)
    result: Mapping[str, Any] | None = None
    message: str = ""
    request_id: str | None = None
    user_id: str | None = None
    node: str | None = None
    done: int = 0
    total: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in (TaskStatus.SUCCESS, TaskStatus.FAILURE)


@attrs.frozen
class ImportRequest:
    """A checked ``POST /v2/images/{id}/import`` body: the method and its arguments."""

    method: str
    uri: str | None = None
    #: ``glance-download``: the image to copy, in which region, through which interface.
    glance_image_id: str | None = None
    glance_region: str | None = None
    glance_service_interface: str = "public"
    #: The stores to import into (multi-store): empty means the default store, or every
    #: store with ``all_stores``; ``all_stores_must_succeed`` fails the import when any one
    #: of them fails (else the image is active in those that worked).
    stores: tuple[str, ...] = ()
    all_stores: bool = False
    all_stores_must_succeed: bool = True


@attrs.frozen
class ImageChange:
    """What ``IMetadataStore.modify`` did: the image before and after."""

    before: Image
    after: Image

    @property
    def changed(self) -> bool:
        return self.before != self.after


@attrs.frozen
class Scrubbed:
    """What a recovery or a scrub repaired: images queued again, blob locations removed."""

    reset: Sequence[str] = ()
    removed: Sequence[str] = ()


@attrs.frozen
class CreateImageRequest:
    """
    What a caller may set when creating an image (the seed's ``CreateImageRequest``).

    Fields left ``None`` take Glance's defaults (``shared``, unprotected, not hidden, 0 GB/MB,
    the caller's project as owner, a fresh UUID).  ``properties`` are the extra properties,
    whether they came flat at the top level or in the seed's ``properties`` object.
    """

    id: str | None = None
    name: str | None = None
    visibility: Visibility | None = None
    protected: bool | None = None
    os_hidden: bool | None = None
    owner: str | None = None
    disk_format: DiskFormat | None = None
    container_format: ContainerFormat | None = None
    min_disk: int | None = None
    min_ram: int | None = None
    tags: Sequence[str] = ()
    properties: Mapping[str, str] = attrs.field(factory=dict)


class PatchOp(enum.StrEnum):
    ADD = "add"
    REPLACE = "replace"
    REMOVE = "remove"


@attrs.frozen
class Change:
    """
    One step of an image update (a json-patch operation after the wire layer decoded it).

    ``strict_add`` is the draft-4 (v2.0 media type) meaning of ``add``: fail if the property
    already exists.  ``value`` is already validated against the image schema.
    """

    op: PatchOp
    name: str
    value: object = None
    strict_add: bool = False


# Filters on list requests --------------------------------------------------------------------


class Compare(enum.StrEnum):
    """Operators Glance accepts on ``created_at``/``updated_at`` and ``in``/``eq`` elsewhere."""

    EQ = "eq"
    NEQ = "neq"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    IN = "in"


@attrs.frozen
class Condition:
    """``field <op> value``; for ``IN`` the value is a tuple."""

    field: str
    op: Compare
    value: object


@attrs.frozen
class SortKey:
    key: str
    direction: SortDir


#: Columns a list may be sorted by (Glance's ``_get_sorting_params`` list).
SORT_KEYS = (
    "name",
    "status",
    "container_format",
    "disk_format",
    "size",
    "id",
    "created_at",
    "updated_at",
)


class VisibilityFilter(enum.StrEnum):
    """The ``visibility`` list filter: one visibility, or ``all``."""

    PUBLIC = "public"
    PRIVATE = "private"
    SHARED = "shared"
    COMMUNITY = "community"
    ALL = "all"


@attrs.frozen
class ImageQuery:
    """
    A list request, decoded: what to match, in what order, and which page.

    ``conditions`` apply to image columns; ``properties`` are exact matches on extra
    properties; ``tags`` must all be present.  ``sort`` always ends with ``created_at`` and
    ``id`` so that a page boundary (``marker``) is unambiguous.
    """

    limit: int
    sort: Sequence[SortKey] = (
        SortKey("created_at", SortDir.DESC),
        SortKey("id", SortDir.DESC),
    )
    marker: str | None = None
    conditions: Sequence[Condition] = ()
    properties: Mapping[str, str] = attrs.field(factory=dict)
    tags: Sequence[str] = ()
    visibility: VisibilityFilter | None = None
    #: ``member_status`` filter; ``None`` is ``all``.
    member_status: MemberStatus | None = MemberStatus.ACCEPTED
    os_hidden: bool = False


@attrs.frozen
class Scope:
    """
    Which images a list may return, decided by policy before the store is asked.

    ``everything`` (admins) lifts ownership rules; otherwise the caller sees public images and
    those owned by ``project`` (plus, when asked for, community images).  How this combines
    with the ``visibility`` filter is Glance's table, applied by the metadata store.
    """

    everything: bool
    project: str | None
    #: Which memberships make another project's shared image part of a list (``None``: any
    #: status).  Glance's ``member_status`` filter, ``accepted`` by default.
    member_status: MemberStatus | None = MemberStatus.ACCEPTED


@attrs.frozen
class Page:
    """One page of a list: the images and whether the store filled it to ``limit``."""

    images: Sequence[Image]
    full: bool


@attrs.frozen
class ByteRange:
    """
    A single requested byte range, as in HTTP ``bytes=first-last`` or suffix ``bytes=-suffix``.

    The service resolves it against the image size (``resolve``), so that the web layer never
    decides what is satisfiable.  A range that could not be parsed is ``ByteRange(suffix=0)``:
    satisfiable by no image.
    """

    first: int | None = None
    last: int | None = None
    suffix: int | None = None
    #: Unsatisfiable if it reaches past the data, rather than clamped (Glance's
    #: ``Content-Range`` download form).
    exact: bool = False

    def resolve(self, size: int) -> tuple[int, int] | None:
        """Return ``(offset, length)`` within ``size`` bytes, or ``None`` if unsatisfiable."""
        if self.suffix is not None:
            if self.suffix <= 0 or size == 0:
                return None
            length = min(self.suffix, size)
            return size - length, length
        assert self.first is not None
        if self.first >= size or (self.exact and self.last is not None and self.last >= size):
            return None
        last = size - 1 if self.last is None else min(self.last, size - 1)
        if last < self.first:
            return None
        return self.first, last - self.first + 1


@attrs.frozen
class Download:
    """
    What the service hands back for a download: the image and, if it has data, a producer.

    ``producer`` is an ``IBodyProducer`` of exactly ``length`` bytes starting at ``offset``;
    ``ranged`` says whether a byte range was asked for (so the web layer answers 206).
    """

    image: Image
    producer: IBodyProducer | None
    offset: int = 0
    length: int = 0
    ranged: bool = False


@attrs.frozen
class ProjectUsage:
    """What one project holds now: bytes stored, images, images receiving data."""

    size_total: int = 0
    image_count: int = 0
    uploading: int = 0


@attrs.frozen
class QuotaUsage:
    """A project's usage beside its limits (``None``: unlimited), for ``/v2/info/usage``."""

    usage: ProjectUsage
    size_limit: int | None
    count_limit: int | None
    uploading_limit: int | None
