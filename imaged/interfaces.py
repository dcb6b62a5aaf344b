"""
The three seams of imaged, as zope interfaces.

``IImageService`` is what the web layer needs (the seed's ``Service``): anyone can mount imaged's
HTTP API over their own implementation.  ``IMetadataStore`` and ``IBlobStore`` are what the
standard service is built on; they are chosen by configuration (SQLite or PostgreSQL; local files,
Swift or S3).  Every method that may wait returns a ``Deferred``; none of them may block the
reactor thread.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IImageService(Interface):
    """
    Glance's image operations with their rules (status state machine, policy, quotas).

    Every method takes the caller's ``RequestContext`` first and returns a ``Deferred``.  Errors
    are ``imaged.errors`` exceptions delivered as failures of that ``Deferred``.
    """

    hash_algo = Attribute("Name of the multihash algorithm (``os_hash_algo``), e.g. 'sha512'.")

    def create(context, request):
        """
        Create a queued image from an ``imaged.model.CreateImageRequest``.

        @return: ``Deferred`` firing with the new ``Image``.
        """

    def list(context, query):
        """
        List images visible to the caller matching an ``imaged.model.ImageQuery``.

        @return: ``Deferred`` firing with a ``Page``.
        """

    def get(context, image_id):
        """@return: ``Deferred`` firing with the ``Image``; ``ImageNotFound`` if invisible."""

    def update(context, image_id, changes):
        """
        Apply a sequence of ``Change`` steps atomically: all of them or none.

        @return: ``Deferred`` firing with the updated ``Image``.
        """

    def delete(context, image_id):
        """Delete the image and its data. @return: ``Deferred`` firing with ``None``."""

    def upload(context, image_id, producer, size=None):
        """
        Store the image's data from an ``IBodyProducer`` and make the image active.

        @param size: the size the client declared, if any; checked against the cap up front
            and against the bytes received at the end.
        @return: ``Deferred`` firing with the active ``Image``.
        """

    def download(context, image_id, byte_range=None):
        """
        Open the image's data, optionally one ``ByteRange`` of it.

        @return: ``Deferred`` firing with a ``Download``; its ``producer`` is ``None`` when the
            image has no data.
        """

    def add_tag(context, image_id, tag):
        """Add a tag (idempotent). @return: ``Deferred`` firing with ``None``."""

    def remove_tag(context, image_id, tag):
        """Remove a tag; ``NotFound`` if absent. @return: ``Deferred`` firing with ``None``."""

    def deactivate(context, image_id):
        """Make an active image's data unavailable to non-admins."""

    def reactivate(context, image_id):
        """Make a deactivated image active again."""

    def add_member(context, image_id, member_id):
        """Share a ``shared`` image with a project (status ``pending``)."""

    def list_members(context, image_id):
        """The image's members (all for its owner, its own row for a member)."""

    def get_member(context, image_id, member_id):
        """One member; anything the caller may not see is ``NotFound``."""

    def update_member(context, image_id, member_id, status):
        """A member accepts or rejects an image shared with it."""

    def delete_member(context, image_id, member_id):
        """The owner stops sharing the image with a project."""

    def usage(context):
        """
        The caller's project's usage beside its quotas (readers of the project may ask).

        @return: ``Deferred`` firing with a ``QuotaUsage``.
        """

    def health():
        """
        Whether the service can serve: its database answers.

        @return: ``Deferred`` firing with ``None`` when healthy, or with a short reason.
        """

    def recover(started_at):
        """
        After an unclean stop of a single-node deployment: put images left ``saving`` back to
        ``queued`` and remove blobs (completed before ``started_at``) no image refers to.

        @return: ``Deferred`` firing with ``(image ids reset, locations removed)``.
        """


class IMetadataStore(Interface):
    """
    Durable image records.  Implementations keep every call atomic with respect to others,
    across processes and nodes where they are shared.
    """

    def insert(image):
        """
        Store a new ``Image``.

        @return: ``Deferred`` firing with the stored ``Image``; ``Duplicate`` if its id was
            ever used (deleted images keep their ids).
        """

    def get(image_id):
        """@return: ``Deferred`` firing with the ``Image`` or ``None`` (missing or deleted)."""

    def list(scope, query):
        """
        One page of images within a ``Scope`` matching an ``ImageQuery``, in its sort order,
        starting after ``query.marker``.

        @return: ``Deferred`` firing with a ``Page``; ``BadRequest`` for an unknown marker.
        """

    def modify(image_id, mutate):
        """
        Atomically read the image, call ``mutate(image) -> image`` and write the result.

        ``mutate`` runs in the store's own thread and must be a pure function of the image; if
        it raises, nothing is written and the exception is the ``Deferred``'s failure.

        @return: ``Deferred`` firing with the written ``Image``; ``ImageNotFound`` if missing
            or deleted.
        """

    def add_member(member):
        """Store a new ``Member``; ``Duplicate`` if the project is a member already."""

    def get_member(image_id, member_id):
        """@return: ``Deferred`` firing with the ``Member`` or ``None``."""

    def list_members(image_id):
        """@return: ``Deferred`` firing with the image's members, oldest first."""

    def update_member(image_id, member_id, status, updated_at):
        """Set a member's status. @return: ``Deferred`` firing with the ``Member``."""

    def delete_member(image_id, member_id):
        """@return: ``Deferred`` firing with whether a member was removed."""

    def usage(owner):
        """
        @return: ``Deferred`` firing with the ``ProjectUsage`` of project ``owner``: the bytes
            of its (not deleted) images, their number, and how many are ``saving``.
        """

    def ids_with_status(status):
        """@return: ``Deferred`` firing with the ids of the (not deleted) images in ``status``."""

    def locations():
        """@return: ``Deferred`` firing with the set of blob locations images still refer to."""

    def ping():
        """@return: ``Deferred`` firing when the database answers (failing if it cannot)."""

    def close():
        """Release connections and threads. @return: ``Deferred`` firing when done."""


class IBlobStore(Interface):
    """
    Image bytes.  A blob is written once, read many times, and deleted; it is never visible
    half-written.
    """

    def write(image_id, producer, hash_algo, size_cap=None):
        """
        Consume an ``IBodyProducer`` into a new blob, computing md5 and ``hash_algo`` on the way.

        Back-pressure: the store pauses the producer when it falls behind.  On any failure
        (including ``TooLarge`` when more than ``size_cap`` bytes arrive) nothing is left
        stored.

        @return: ``Deferred`` firing with a ``StoredBlob``.
        """

    def read(location, offset=0, length=None):
        """
        Open a blob for reading, whole or ``length`` bytes from ``offset``.

        @return: ``Deferred`` firing with an ``IBodyProducer`` (whose ``length`` is the number
            of bytes it will produce) that honours ``pauseProducing``/``resumeProducing``;
            ``NotFound`` if the blob is gone.
        """

    def delete(location):
        """Remove a blob; a missing blob is not an error. @return: ``Deferred``."""

    def close():
        """Release the store's threads and connections. @return: ``Deferred``."""

    def stored_before(timestamp):
        """
        @return: ``Deferred`` firing with the locations of the blobs completed before
            ``timestamp`` (seconds since the epoch): candidates for orphan cleanup that no
            upload in progress can still be about to claim.
        """
