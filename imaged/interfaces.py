"""
The seams of imaged, as typed zope interfaces: what flows between web, service and stores.

``IImageService`` is what the web layer needs (the seed's ``Service``): anyone can mount
imaged's HTTP API over their own implementation. ``IMetadataStore`` and ``IBlobStore`` are what
the standard service is built on; they are chosen by configuration (SQLite or PostgreSQL; local
files, Swift or S3). ``IMetadefService`` and ``IMetadefStore`` are the same two seams for the
metadata definitions catalog. Every method that may wait returns a ``Deferred``; none of them
may block the reactor thread. Errors are ``imaged.errors`` exceptions delivered as the
``Deferred``'s failure.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.iweb import IBodyProducer
from zope.interface import Attribute, Interface

from .context import RequestContext
from .metadefs.model import (
    Association,
    AssociationSpec,
    CatalogScope,
    Content,
    Definition,
    DefinitionSpec,
    Kind,
    Listed,
    LoadMode,
    LoadReport,
    Namespace,
    NamespaceQuery,
    NamespaceSpec,
    NewNamespace,
    ResourceType,
    TagQuery,
)
from .model import (
    ByteRange,
    Change,
    CreateImageRequest,
    Download,
    Health,
    Image,
    ImageChange,
    ImageQuery,
    ImportRequest,
    Location,
    Member,
    MemberStatus,
    Mutation,
    Page,
    ProjectUsage,
    QuotaUsage,
    SavingUpload,
    Scope,
    Scrubbed,
    Status,
    StoredBlob,
    StoreInfo,
    Task,
    TaskStatus,
)


class IImageService(Interface):
    """
    Glance's image operations with their rules (status state machine, policy, quotas).

    Every method takes the caller's ``RequestContext`` first.  An image the caller may not see
    is ``ImageNotFound``; one it may see but not change is ``Forbidden``.
    """

    hash_algo = Attribute("Name of the multihash algorithm (``os_hash_algo``), e.g. 'sha512'.")

    def create(context: RequestContext, request: CreateImageRequest) -> Deferred[Image]:
        """Create a queued image; fires with it."""

    def list(context: RequestContext, query: ImageQuery) -> Deferred[Page]:
        """One page of the images visible to the caller that match ``query``."""

    def get(context: RequestContext, image_id: str) -> Deferred[Image]:
        """The image, if the caller may see it."""

    def update(
        context: RequestContext, image_id: str, changes: Sequence[Change]
    ) -> Deferred[Image]:
        """Apply ``changes`` atomically, all of them or none; fires with the updated image."""

    def delete(context: RequestContext, image_id: str) -> Deferred[None]:
        """Delete the image and its data."""

    def upload(
        context: RequestContext,
        image_id: str,
        producer: IBodyProducer,
        size: int | None = None,
        store: str | None = None,
    ) -> Deferred[Image]:
        """
        Store the image's data from ``producer`` and make the image active.

        ``size`` is what the client declared, if anything: checked against the cap up front
        and against the bytes received at the end.  ``store`` names the store to write to
        (multi-store; ``BadRequest`` for an unknown one), else the default.  On any failure
        the image is ``queued`` again and nothing of the data is kept.
        """

    store_info = Attribute(
        "The configured stores (``imaged.model.StoreInfo``), default first; empty when the "
        "site has one unnamed store (no multi-store API)."
    )

    def describe_stores(context: RequestContext, detail: bool) -> Sequence[StoreInfo]:
        """``store_info`` for ``/v2/info/stores``: ``NotFound`` without multi-store; the
        ``detail`` (types, weights, properties) for administrators only."""

    def named_locations(locations: Sequence[Location]) -> Sequence[Location]:
        """``locations`` with the names of the configured stores that hold them."""

    def delete_from_store(context: RequestContext, store: str, image_id: str) -> Deferred[None]:
        """Remove the copy of an active image's data in ``store``; never the last one."""

    import_methods = Attribute(
        "The interoperable import methods offered (``GET /v2/info/import``), Glance's names."
    )

    def stage(
        context: RequestContext,
        image_id: str,
        producer: IBodyProducer,
        size: int | None = None,
    ) -> Deferred[Image]:
        """
        Keep data for a later ``glance-direct`` import (``queued -> uploading``), with
        ``upload``'s checks; on failure the image is ``queued`` again with nothing kept.
        """

    def import_image(
        context: RequestContext, image_id: str, request: ImportRequest
    ) -> Deferred[Task]:
        """Start an import: the image locked, the task recorded; the work goes on after
        the Deferred fires (with the task)."""

    def image_tasks(context: RequestContext, image_id: str) -> Deferred[builtins.list[Task]]:
        """The tasks of an image the caller may see, oldest first."""

    def list_tasks(
        context: RequestContext,
        status: TaskStatus | None,
        type: str | None,
        limit: int,
        marker: str | None,
        newest_first: bool,
    ) -> Deferred[builtins.list[Task]]:
        """One page of every task (the tasks API, an administrator's)."""

    def get_task(context: RequestContext, task_id: str) -> Deferred[Task]:
        """One task (the tasks API)."""

    def create_task(
        context: RequestContext,
        uri: str,
        image: CreateImageRequest,
        task_input: Mapping[str, Any],
    ) -> Deferred[Task]:
        """Glance's legacy ``import`` task: a new image, its data fetched from ``uri``."""

    def download(
        context: RequestContext,
        image_id: str,
        byte_range: ByteRange | None = None,
        prefer: Sequence[str] = (),
    ) -> Deferred[Download]:
        """Open the image's data, whole or one range, from the best copy that answers (the
        stores in ``prefer`` first, then by weight); ``Download.producer`` is ``None`` when
        the image has no data."""

    def add_tag(context: RequestContext, image_id: str, tag: str) -> Deferred[None]:
        """Add a tag (idempotent)."""

    def remove_tag(context: RequestContext, image_id: str, tag: str) -> Deferred[None]:
        """Remove a tag; ``NotFound`` if absent."""

    def deactivate(context: RequestContext, image_id: str) -> Deferred[None]:
        """Make an active image's data unavailable to non-admins."""

    def reactivate(context: RequestContext, image_id: str) -> Deferred[None]:
        """Make a deactivated image active again."""

    def add_member(context: RequestContext, image_id: str, member_id: str) -> Deferred[Member]:
        """Share a ``shared`` image with a project (status ``pending``)."""

    def list_members(context: RequestContext, image_id: str) -> Deferred[builtins.list[Member]]:
        """The image's members (all for its owner, its own row for a member)."""

    def get_member(context: RequestContext, image_id: str, member_id: str) -> Deferred[Member]:
        """One member; anything the caller may not see is ``NotFound``."""

    def update_member(
        context: RequestContext, image_id: str, member_id: str, status: MemberStatus
    ) -> Deferred[Member]:
        """A member accepts or rejects an image shared with it."""

    def delete_member(context: RequestContext, image_id: str, member_id: str) -> Deferred[None]:
        """The owner stops sharing the image with a project."""

    def usage(context: RequestContext) -> Deferred[QuotaUsage]:
        """The caller's project's usage beside its quotas (readers of the project may ask)."""

    def health() -> Deferred[Health]:
        """Whether the service can serve (its database and a store answer: else
        ``Health.problem`` says why, briefly), and what is down without stopping it
        (``Health.notes``: a store among several)."""

    def recover(started_at: float) -> Deferred[Scrubbed]:
        """
        After an unclean stop of a single-node deployment: put images left ``saving`` back to
        ``queued`` and remove blobs (completed before ``started_at``, seconds since the epoch)
        that no image refers to.
        """

    def sweep() -> Deferred[Scrubbed]:
        """
        One round of a running node's self-repair: its heartbeat recorded, images held
        ``saving`` by dead uploads (its own or a silent node's) queued again, and now and then
        old blobs no image refers to removed.
        """


class IMetadataStore(Interface):
    """
    Durable image records.  Implementations keep every call one transaction, atomic with
    respect to the others, across processes and nodes where the store is shared.
    """

    def insert(image: Image) -> Deferred[Image]:
        """Store a new image; ``Duplicate`` if its id was ever used (deleted images keep it)."""

    def get(image_id: str) -> Deferred[Image | None]:
        """The image, or ``None`` when missing or deleted."""

    def list(scope: Scope, query: ImageQuery) -> Deferred[Page]:
        """
        One page of images within ``scope`` matching ``query``, in its sort order, starting
        after ``query.marker``; ``BadRequest`` for an unknown marker.
        """

    def modify(
        image_id: str,
        mutate: Mutation,
        member_of: str | None = None,
        name: str = "modify_image",
    ) -> Deferred[ImageChange]:
        """
        In one transaction: read the image, call ``mutate(image, member)``, write the result.

        ``member`` is project ``member_of``'s membership of the image when that can matter
        (the image is shared and not owned by ``member_of``), else ``None``: a policy check in
        ``mutate`` needs no transaction of its own.  ``mutate`` runs in the store's thread and
        must be a pure function of its arguments; if it raises, nothing is written and the
        exception is the failure.  ``name`` labels the transaction in logs and metrics.

        @return: the image before and after; ``ImageNotFound`` if missing or deleted.
        """

    def add_member(member: Member) -> Deferred[Member]:
        """Store a new member; ``Duplicate`` if the project is a member already."""

    def get_member(image_id: str, member_id: str) -> Deferred[Member | None]:
        """One membership, or ``None``."""

    def list_members(image_id: str) -> Deferred[builtins.list[Member]]:
        """The image's members, oldest first."""

    def update_member(
        image_id: str, member_id: str, status: MemberStatus, updated_at: datetime
    ) -> Deferred[Member]:
        """Set a member's status; ``updated_at`` is naive UTC, as every stored time."""

    def delete_member(image_id: str, member_id: str) -> Deferred[bool]:
        """Whether a member was removed."""

    def usage(owner: str) -> Deferred[ProjectUsage]:
        """Project ``owner``'s bytes stored, image count and uploads in progress."""

    def ids_with_status(status: Status) -> Deferred[builtins.list[str]]:
        """The ids of the (not deleted) images in ``status``."""

    def locations() -> Deferred[set[str]]:
        """The blob locations images still refer to."""

    def heartbeat(node: str, at: datetime) -> Deferred[None]:
        """Record that ``node`` (one imaged process) is alive at ``at`` (naive UTC)."""

    def saving_uploads() -> Deferred[builtins.list[SavingUpload]]:
        """Every (not deleted) image ``saving``, with its upload's node and that node's last
        heartbeat."""

    def forget_nodes(before: datetime) -> Deferred[int]:
        """Drop the heartbeats of nodes not heard from since ``before``, holding no upload;
        how many went."""

    def ping() -> Deferred[None]:
        """Fires when the database answers, fails when it cannot."""

    def close() -> Deferred[None]:
        """Release connections and threads."""


class ITaskStore(Interface):
    """
    Durable tasks (imports), in the metadata database: a task survives a restart, and a
    node's claim on one (``Task.node``) says who runs it.  Each call is one transaction.
    """

    def insert_task(task: Task) -> Deferred[Task]:
        """Store a new task."""

    def get_task(task_id: str) -> Deferred[Task | None]:
        """The task, or ``None`` when missing or deleted."""

    def delete_task(task_id: str) -> Deferred[None]:
        """Forget a task that never started (its import was refused)."""

    def modify_task(task_id: str, mutate: Callable[[Task], Task]) -> Deferred[Task]:
        """In one transaction: read the task, ``mutate`` it (in the store's thread; if it
        raises, nothing is written), write it; ``NotFound`` if missing."""

    def image_tasks(image_id: str) -> Deferred[builtins.list[Task]]:
        """The image's tasks, oldest first."""

    def list_tasks(
        owner: str | None,
        status: TaskStatus | None,
        type: str | None,
        limit: int,
        marker: str | None,
        newest_first: bool,
    ) -> Deferred[builtins.list[Task]]:
        """One page of tasks (of ``owner``, unless ``None``: all), by ``created_at``;
        ``BadRequest`` for an unknown marker."""

    def unfinished_tasks() -> Deferred[builtins.list[tuple[Task, datetime | None]]]:
        """Every task not finished, with the last heartbeat of the node holding it."""

    def purge_tasks(expired_before: datetime) -> Deferred[int]:
        """Forget finished tasks whose ``expires_at`` is before ``expired_before``; how many."""


class IBlobStore(Interface):
    """
    Image bytes.  A blob is written once, read many times, and deleted; it is never visible
    half-written.
    """

    def write(
        image_id: str,
        producer: IBodyProducer,
        hash_algo: str,
        size_cap: int | None = None,
    ) -> Deferred[StoredBlob]:
        """
        Consume ``producer`` into a new blob, computing md5 and ``hash_algo`` on the way.

        Back-pressure: the store pauses the producer when it falls behind.  On any failure
        (``TooLarge`` when more than ``size_cap`` bytes arrive, ``StoreFailure`` when the
        store cannot do its part) nothing is left stored.
        """

    def read(location: str, offset: int = 0, length: int | None = None) -> Deferred[IBodyProducer]:
        """
        Open a blob, whole or ``length`` bytes from ``offset``: a producer whose ``length`` is
        the number of bytes it will produce and which honours pause and resume; ``NotFound``
        if the blob is gone.
        """

    def delete(location: str) -> Deferred[None]:
        """Remove a blob; a missing blob is not an error; ``InUse`` (nothing removed) when
        the store keeps something that depends on it."""

    def owns(location: str) -> bool:
        """Whether ``location`` is in this store (a location recorded before the store had
        a name, or by another deployment, is matched to its store by this)."""

    def ping() -> Deferred[None]:
        """Fires when the store answers (for ``/healthcheck``); ``StoreFailure`` saying why
        when it does not."""

    def stored_before(timestamp: float) -> Deferred[builtins.list[str]]:
        """
        The locations of the blobs completed before ``timestamp`` (seconds since the epoch):
        candidates for orphan cleanup that no upload in progress can still claim.
        """

    def close() -> Deferred[None]:
        """Release the store's threads and connections."""


#: Checks a namespace inside the transaction that reads it (visibility, policy, protection):
#: raises ``NotFound`` or ``Forbidden`` to stop the operation before it changes anything.
Guard = Callable[[Namespace], None]


class IMetadefStore(Interface):
    """
    The metadata definitions catalog's records.  Every operation on a namespace's content
    reads the namespace, calls ``guard`` on it and acts in one transaction, so a check and
    the change it permits cannot be separated by another writer.  A missing namespace or
    definition is ``NotFound``; a name taken is ``Duplicate``.
    """

    def list_namespaces(
        scope: CatalogScope, query: NamespaceQuery
    ) -> Deferred[builtins.list[Listed]]:
        """One page of the namespaces ``scope`` may see, with their associations; a
        ``marker`` that is not one of them is ``NotFound``."""

    def content(name: str, guard: Guard) -> Deferred[Content]:
        """A namespace and everything in it."""

    def create_namespace(content: Content, create_types: bool = True) -> Deferred[Content]:
        """Insert a namespace with its associations and definitions, all or nothing;
        resource types that do not exist are made if ``create_types``, else ``Forbidden``."""

    def update_namespace(
        name: str, guard: Guard, change: Callable[[Namespace], Namespace]
    ) -> Deferred[Namespace]:
        """Replace a namespace's attributes (a rename among them) with ``change``'s."""

    def delete_namespace(name: str, guard: Guard) -> Deferred[None]:
        """Remove a namespace and everything in it."""

    def definitions(
        namespace: str, kind: Kind, guard: Guard, query: TagQuery | None = None
    ) -> Deferred[builtins.list[Definition]]:
        """A namespace's definitions of ``kind``, in the order they were made, or as
        ``query`` pages them."""

    def definition(namespace: str, kind: Kind, name: str, guard: Guard) -> Deferred[Definition]:
        """One definition."""

    def add_definitions(
        namespace: str,
        definitions: Sequence[Definition],
        guard: Guard,
        replace_kind: Kind | None = None,
    ) -> Deferred[builtins.list[Definition]]:
        """Insert ``definitions``, all or nothing; with ``replace_kind``, after removing the
        namespace's definitions of that kind (a tag list that is not appended)."""

    def replace_definition(
        namespace: str, kind: Kind, name: str, guard: Guard,
        change: Callable[[Definition], Definition],
    ) -> Deferred[Definition]:
        """Replace one definition (a rename among them) with ``change``'s."""

    def remove_definitions(
        namespace: str,
        kind: Kind,
        guard: Guard,
        name: str | None = None,
        protect: Guard | None = None,
    ) -> Deferred[None]:
        """Remove the definition ``name``, or every definition of ``kind``; ``protect`` judges
        the namespace once what is to go is found (a missing one is ``NotFound`` first)."""

    def resource_types() -> Deferred[builtins.list[ResourceType]]:
        """Every resource type, by name."""

    def associations(namespace: str, guard: Guard) -> Deferred[builtins.list[Association]]:
        """A namespace's resource type associations."""

    def associate(
        namespace: str, association: Association, guard: Guard, create_types: bool = True
    ) -> Deferred[Association]:
        """Associate a namespace with a resource type (made if it does not exist and
        ``create_types``, else ``Forbidden``)."""

    def dissociate(
        namespace: str, resource_type: str, guard: Guard, protect: Guard | None = None
    ) -> Deferred[None]:
        """Remove a namespace's association with a resource type; ``protect`` as in
        ``remove_definitions``."""

    def load(contents: Sequence[Content], mode: LoadMode) -> Deferred[LoadReport]:
        """Load definition files' namespaces; ``mode`` says what happens to those that
        exist.  Resource types they name are made protected."""

    def unload(namespaces: Sequence[str] | None = None) -> Deferred[int]:
        """Remove the named namespaces, or the whole catalog (resource types too); the
        number of namespaces removed."""

    def export() -> Deferred[builtins.list[Content]]:
        """Every namespace with its content, by name."""


class IMetadefService(Interface):
    """
    What the web layer needs of the catalog: Glance's metadefs API as calls, its rules
    (visibility, policy, protection, prefixes) applied to ``context``.
    """

    def list_namespaces(
        context: RequestContext, query: NamespaceQuery
    ) -> Deferred[builtins.list[Listed]]:
        """A page of the namespaces the caller may see."""

    def get_namespace(
        context: RequestContext, name: str, resource_type: str | None = None
    ) -> Deferred[Content]:
        """A namespace with its content; with ``resource_type``, property names carry that
        association's prefix."""

    def create_namespace(context: RequestContext, new: NewNamespace) -> Deferred[Content]:
        """Create a namespace with its initial content."""

    def update_namespace(
        context: RequestContext, name: str, spec: NamespaceSpec
    ) -> Deferred[Namespace]:
        """Replace a namespace's attributes."""

    def delete_namespace(context: RequestContext, name: str) -> Deferred[None]:
        """Delete a namespace that is not protected, with its content."""

    def clear_namespace(context: RequestContext, name: str, kind: Kind) -> Deferred[None]:
        """Delete all of a namespace's definitions of ``kind``."""

    def list_definitions(
        context: RequestContext, namespace: str, kind: Kind, query: TagQuery | None = None
    ) -> Deferred[builtins.list[Definition]]:
        """A namespace's objects, properties or tags."""

    def get_definition(
        context: RequestContext,
        namespace: str,
        kind: Kind,
        name: str,
        resource_type: str | None = None,
    ) -> Deferred[Definition]:
        """One definition; a property by its prefixed name with ``resource_type``."""

    def add_definition(
        context: RequestContext, namespace: str, spec: DefinitionSpec
    ) -> Deferred[Definition]:
        """Create an object, a property or a tag."""

    def add_tags(
        context: RequestContext, namespace: str, names: Sequence[str], append: bool
    ) -> Deferred[builtins.list[Definition]]:
        """Create tags at once, replacing the namespace's tags unless ``append``."""

    def update_definition(
        context: RequestContext, namespace: str, name: str, spec: DefinitionSpec
    ) -> Deferred[Definition]:
        """Replace a definition (``spec.name`` may rename it)."""

    def delete_definition(
        context: RequestContext, namespace: str, kind: Kind, name: str
    ) -> Deferred[None]:
        """Delete a definition of a namespace that is not protected."""

    def list_resource_types(context: RequestContext) -> Deferred[builtins.list[ResourceType]]:
        """Every resource type."""

    def list_associations(
        context: RequestContext, namespace: str
    ) -> Deferred[builtins.list[Association]]:
        """A namespace's resource type associations."""

    def associate(
        context: RequestContext, namespace: str, spec: AssociationSpec
    ) -> Deferred[Association]:
        """Associate a namespace with a resource type."""

    def dissociate(context: RequestContext, namespace: str, resource_type: str) -> Deferred[None]:
        """Remove an association of a namespace that is not protected."""


__all__ = [
    "Guard",
    "IBlobStore",
    "IImageService",
    "IMetadataStore",
    "IMetadefService",
    "IMetadefStore",
    "ITaskStore",
]
