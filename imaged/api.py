"""
imaged's public Python surface, the Pythonic form of the seed's ``openstack/image`` package.

Typed (the package ships ``py.typed``): embedding programs type-check against it.

Other Twisted programs import from here::

    from imaged.api import APIConfig, routes
    site = Site(routes(APIConfig(image_service=my_service)).resource())
"""

from .context import RequestContext
from .interfaces import (
    IBlobStore,
    IImageService,
    IMetadataStore,
    IMetadefService,
    IMetadefStore,
)
from .metadefs.service import MetadefService
from .model import (
    ByteRange,
    Change,
    ContainerFormat,
    CreateImageRequest,
    DiskFormat,
    Download,
    Image,
    ImageChange,
    ImageQuery,
    Link,
    Member,
    MemberStatus,
    Mutation,
    Page,
    PatchOp,
    Scrubbed,
    Status,
    StoredBlob,
    Version,
    VersionStatus,
    Visibility,
)
from .quotas import Limits
from .service import ImageService
from .web.app import API_PORT, APIConfig, ImagesAPI, routes
from .web.routing import VERSIONS

__all__ = [
    "API_PORT",
    "VERSIONS",
    "APIConfig",
    "ByteRange",
    "Change",
    "ContainerFormat",
    "CreateImageRequest",
    "DiskFormat",
    "Download",
    "IBlobStore",
    "IImageService",
    "IMetadataStore",
    "IMetadefService",
    "IMetadefStore",
    "Image",
    "ImageChange",
    "ImageQuery",
    "ImageService",
    "ImagesAPI",
    "Limits",
    "Link",
    "Member",
    "MemberStatus",
    "MetadefService",
    "Mutation",
    "Page",
    "PatchOp",
    "RequestContext",
    "Scrubbed",
    "Status",
    "StoredBlob",
    "Version",
    "VersionStatus",
    "Visibility",
    "routes",
]
