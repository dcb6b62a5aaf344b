"""
imaged's public Python surface, the Pythonic form of the seed's ``openstack/image`` package.

Other Twisted programs import from here::

    from imaged.api import APIConfig, routes
    site = Site(routes(APIConfig(image_service=my_service)).resource())
"""

from .context import RequestContext
from .interfaces import IBlobStore, IImageService, IMetadataStore
from .model import (
    ByteRange,
    Change,
    ContainerFormat,
    CreateImageRequest,
    DiskFormat,
    Download,
    Image,
    ImageQuery,
    Link,
    Page,
    PatchOp,
    Status,
    StoredBlob,
    Version,
    VersionStatus,
    Visibility,
)
from .service import ImageService, Limits
from .web.app import API_PORT, VERSIONS, APIConfig, ImagesAPI, routes

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
    "Image",
    "ImageQuery",
    "ImageService",
    "ImagesAPI",
    "Limits",
    "Link",
    "Page",
    "PatchOp",
    "RequestContext",
    "Status",
    "StoredBlob",
    "Version",
    "VersionStatus",
    "Visibility",
    "routes",
]
