"""
Domain errors: what went wrong, in the service's words.

The service and the stores raise these; exactly one place (``imaged.web.errors``) turns them
into HTTP status codes and Glance-shaped bodies.  Each class names the kind of failure, not the
status code, so that a non-HTTP caller of ``IImageService`` can handle them too.
"""

from __future__ import annotations


class ImageServiceError(Exception):
    """Base of every error the image service reports to its callers."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ImageServiceError):
    """The request is malformed or violates the image schema."""


class NotFound(ImageServiceError):
    """The thing does not exist, or the caller may not know that it does."""


class ImageNotFound(NotFound):
    def __init__(self, image_id: str) -> None:
        super().__init__(f"No image found with ID {image_id}")
        self.image_id = image_id


class Unauthorized(ImageServiceError):
    """
    The request carries no identity this service accepts.

    ``challenge`` names where to get one (the ``WWW-Authenticate`` value keystonemiddleware
    sends, ``Keystone uri="..."``), when the service knows it.
    """

    def __init__(self, message: str, challenge: str | None = None) -> None:
        super().__init__(message)
        self.challenge = challenge


class IdentityUnavailable(ImageServiceError):
    """The identity service could not say who the caller is (down, timing out, erring)."""


class Forbidden(ImageServiceError):
    """The caller may see the image but not do this to it (policy, read-only, protected)."""


class Conflict(ImageServiceError):
    """The request is valid but the image's current state does not allow it."""


class Gone(ImageServiceError):
    """The image disappeared while the request was being served (deleted during upload)."""


class TooLarge(ImageServiceError):
    """A size cap or quota is exceeded."""


class RangeNotSatisfiable(ImageServiceError):
    """A byte range lies outside the image data."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class UnsupportedMediaType(ImageServiceError):
    """The request body is of a type this operation does not take."""


class InvalidImageData(ImageServiceError):
    """The uploaded data is not the declared disk format, or is an unsafe image."""


class StoreFailure(ImageServiceError):
    """A backing store could not do its part (disk full, store unreachable)."""


class MetadataUnavailable(StoreFailure):
    """
    The metadata database cannot be reached or is locked by someone else: try again soon.

    ``retry_after`` is the number of seconds clients are told to wait (``Retry-After``).
    """

    def __init__(self, detail: str, retry_after: int = 5) -> None:
        super().__init__("The image metadata database is unavailable.")
        self.detail = detail
        self.retry_after = retry_after


class InUse(Conflict):
    """The store refuses to remove the data: something depends on it (an RBD clone made by
    Nova or Cinder from the image's snapshot).  Glance's ``InUseByStore``: 409, nothing
    removed."""


class NamespaceNotFound(NotFound):
    """A metadata definitions namespace that does not exist, or that the caller may not see."""

    def __init__(self, namespace: str) -> None:
        super().__init__(f"Metadata definition namespace={namespace} was not found.")
        self.namespace = namespace


class Duplicate(Conflict):
    """A record with this identity exists already (metadata stores raise it on insert)."""
