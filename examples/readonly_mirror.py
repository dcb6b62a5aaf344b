"""
The API mounted over a custom ``IImageService``: a read-only mirror.

It serves another image service's images and refuses every change, for a cache or a
replica.  Any object providing ``IImageService`` (its methods return Deferreds) can stand
behind ``routes()``; the HTTP mapping, schemas and errors come with the routes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from zope.interface import implementer

from imaged.api import APIConfig, IImageService, routes
from imaged.errors import Forbidden


@implementer(IImageService)
class ReadOnlyImages:
    """Reads go to ``source``; anything that would change an image is forbidden (403)."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.hash_algo = source.hash_algo  # what os_hash_algo the source's images carry

    def _refuse(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        return fail(Forbidden("This image service is a read-only mirror."))

    create = update = delete = upload = add_tag = remove_tag = _refuse
    deactivate = reactivate = add_member = update_member = delete_member = _refuse
    stage = import_image = create_task = delete_from_store = _refuse
    #: A mirror takes no data in: no import method is offered.
    import_methods: tuple[str, ...] = ()

    def image_tasks(self, context: Any, image_id: str) -> Deferred[Any]:
        return self.source.image_tasks(context, image_id)  # type: ignore[no-any-return]

    def list_tasks(self, context: Any, *args: Any) -> Deferred[Any]:
        return self.source.list_tasks(context, *args)  # type: ignore[no-any-return]

    def get_task(self, context: Any, task_id: str) -> Deferred[Any]:
        return self.source.get_task(context, task_id)  # type: ignore[no-any-return]

    def list(self, context: Any, query: Any) -> Deferred[Any]:
        return self.source.list(context, query)  # type: ignore[no-any-return]

    def get(self, context: Any, image_id: str) -> Deferred[Any]:
        return self.source.get(context, image_id)  # type: ignore[no-any-return]

    def download(
        self, context: Any, image_id: str, byte_range: Any = None, prefer: Any = ()
    ) -> Deferred[Any]:
        return self.source.download(  # type: ignore[no-any-return]
            context, image_id, byte_range, prefer
        )

    @property
    def store_info(self) -> Any:
        """The source's stores, as the mirror serves from them."""
        return self.source.store_info

    def describe_stores(self, context: Any, detail: bool) -> Any:
        return self.source.describe_stores(context, detail)

    def named_locations(self, locations: Any) -> Any:
        return self.source.named_locations(locations)

    def list_members(self, context: Any, image_id: str) -> Deferred[Any]:
        return self.source.list_members(context, image_id)  # type: ignore[no-any-return]

    def get_member(self, context: Any, image_id: str, member_id: str) -> Deferred[Any]:
        return self.source.get_member(context, image_id, member_id)  # type: ignore[no-any-return]

    def usage(self, context: Any) -> Deferred[Any]:
        return self.source.usage(context)  # type: ignore[no-any-return]

    def health(self) -> Deferred[Any]:
        return self.source.health()  # type: ignore[no-any-return]


    def recover(self, started_at: float) -> Deferred[Any]:
        return self.source.recover(started_at)  # type: ignore[no-any-return]

    def sweep(self) -> Deferred[Any]:
        return self.source.sweep()  # type: ignore[no-any-return]


def mirror_resource(source: Any) -> Any:
    """A Twisted web resource serving ``source`` read-only (mount it in any ``Site``)."""
    return routes(APIConfig(image_service=ReadOnlyImages(source))).resource()
