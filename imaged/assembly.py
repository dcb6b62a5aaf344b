"""
Which parts a configuration asks for: the stores, the image service and the identity strategy.

``assemble`` is shared by the daemon (``imaged.daemon``) and ``imaged-manage``, so both reach
the same database and the same store with the same code; it returns a named ``Assembly``, never
a tuple to unpack by position.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import attrs
from sqlalchemy.exc import SQLAlchemyError
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime

from .fetch import Fetcher, ImportFilter
from .interfaces import IBlobStore
from .metadefs.service import MetadefService
from .service import ImageService
from .settings import Settings, StoreSettings
from .store.database import SchemaOutOfDate, describe
from .store.files import FileBlobStore
from .store.sql import SQLMetadataStore
from .stores import DEFAULT_NAME, NamedStore, Stores
from .web.auth import STRATEGIES, Authenticator, FromNetworks, NoAuth
from .web.keystone import KeystoneTokens, ServiceCredentials


@attrs.frozen
class Assembly:
    """The parts of a running imaged, and where they keep things (for its logs)."""

    metadata: SQLMetadataStore
    blobs: Stores
    service: ImageService
    #: The metadata definitions catalog, in the same database.
    metadefs: MetadefService
    #: Where image bytes are kept, in words (a directory, a Swift container, an S3 bucket).
    images_at: str

    @property
    def single_node(self) -> bool:
        """An embedded database: no other node can be uploading (recovery may run at start)."""
        return self.metadata.dialect == "sqlite"


def metadata_store(settings: Settings, reactor: IReactorFromThreads) -> SQLMetadataStore:
    """The configured metadata database, migrated if it is embedded (one line if it cannot
    be used)."""
    os.makedirs(settings.data_dir, exist_ok=True)
    # An embedded SQLite database belongs to this one node, which migrates it; a server
    # database is shared by nodes and migrated by the operator (imaged-manage db upgrade).
    try:
        return SQLMetadataStore.open(
            settings.database, reactor, migrate=settings.embedded_database
        )
    except SchemaOutOfDate as e:
        raise SystemExit(f"imaged: {e}") from None
    except SQLAlchemyError as e:
        cause = getattr(e, "orig", None) or e  # the driver's own words, where it has them
        raise SystemExit(
            f"imaged: cannot use the database {describe(settings.database)}: {str(cause).strip()}"
        ) from None


def _blob_store(store: StoreSettings, reactor: Any) -> NamedStore:
    """One configured store, made (an RBD store connects here: it stops the start with one
    line when it cannot)."""
    if store.s3 is not None:
        from .store.s3 import S3BlobStore  # botocore is an extra

        s3 = store.s3
        blobs: IBlobStore = S3BlobStore(
            s3.endpoint, s3.bucket, s3.access_key, s3.secret_key, reactor,
            region=s3.region, addressing=s3.addressing, part_size=s3.part_size,
        )
        where = f"S3 bucket {s3.bucket} at {s3.endpoint}"
        properties: dict[str, Any] = {
            "endpoint": s3.endpoint, "bucket": s3.bucket, "region": s3.region,
            "part_size": s3.part_size,
        }
    elif store.swift is not None:
        from .store.swift import SwiftBlobStore

        swift = store.swift
        blobs = SwiftBlobStore(
            swift.auth_url, swift.user, swift.key, reactor,
            container=swift.container, segment_size=swift.segment_size,
        )
        where = f"Swift container {swift.container} at {swift.auth_url}"
        properties = {
            "auth_url": swift.auth_url, "container": swift.container,
            "segment_size": swift.segment_size,
        }
    elif store.rbd is not None:
        from .store.rbd import RBDBlobStore, RBDUnavailable

        rbd = store.rbd
        try:
            connected = RBDBlobStore.connect(
                reactor, pool=rbd.pool, user=rbd.user, conf=rbd.conf,
                chunk_size=rbd.chunk_size * 1024 * 1024, connect_timeout=rbd.connect_timeout,
            )
        except RBDUnavailable as e:
            raise SystemExit(f"imaged: store {store.name}: {e}") from None
        blobs, where = connected, connected.where
        properties = {
            "pool": rbd.pool, "user": rbd.user, "chunk_size": rbd.chunk_size,
            "fsid": connected.fsid,
        }
    else:
        assert store.directory is not None
        blobs, where = FileBlobStore(store.directory, reactor), store.directory
        properties = {"datadir": store.directory}
    return NamedStore(
        name=store.name, type=store.type, blobs=blobs, description=store.description,
        weight=store.weight, properties=properties, where=where,
    )


def _stores(settings: Settings, reactor: Any) -> Stores:
    if settings.named_stores:
        assert settings.default_store is not None
        made: list[NamedStore] = []
        try:
            for store in settings.named_stores:
                made.append(_blob_store(store, reactor))
        except BaseException:
            for done in made:
                done.blobs.close()
            raise
        return Stores(made, settings.default_store, multi=True)
    single = StoreSettings(
        name=DEFAULT_NAME, type=settings.store,
        directory=settings.images_dir if settings.store == "file" else None,
        swift=settings.swift, s3=settings.s3, rbd=settings.rbd,
    )
    return Stores([_blob_store(single, reactor)], DEFAULT_NAME, multi=False)


#: The identity modes whose service catalog is Keystone's (not written by the caller).
CATALOG_TRUSTED = ("keystone", "trusted-headers")
#: Every address (``glance-download`` reaches the catalog's endpoints wherever they are).
ANYWHERE = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def assemble(settings: Settings, reactor: Any) -> Assembly:
    """The stores and the image service ``settings`` describe, on ``reactor``."""
    os.makedirs(settings.data_dir, exist_ok=True)
    metadata = metadata_store(settings, reactor)
    blobs = _stores(settings, reactor)
    images_at = "; ".join(
        f"{store.name}: {store.where}" if blobs.multi else store.where for store in blobs
    )
    service = ImageService(
        metadata,
        blobs,
        settings.hash_algo,
        settings.limits,
        require_format_match=settings.require_format_match,
        clock=reactor,
        rules=settings.rules,
        import_methods=settings.import_methods,
        stage_expiry=settings.stage_expiry,
        fetcher=Fetcher(reactor, settings.import_filter),
        uri_rules=settings.import_filter,
        import_plugins=settings.import_plugins,
        # glance-download's endpoints come from Keystone's catalog (the operator's), so any
        # address and port is allowed; redirects and timeouts are handled as web-download's.
        # Only where the catalog is Keystone's word: in the modes that believe any header
        # the caller could write one, and glance-download would fetch from anywhere.
        remote=(
            Fetcher(reactor, ImportFilter(allowed_ports=(), allowed_networks=ANYWHERE))
            if settings.auth in CATALOG_TRUSTED else None
        ),
        download_properties=settings.glance_download_properties,
        node_lease=settings.node_lease,
    )
    metadefs = MetadefService(metadata, settings.rules, clock=reactor)
    return Assembly(
        metadata=metadata, blobs=blobs, service=service, metadefs=metadefs, images_at=images_at
    )


def authenticator(settings: Settings, reactor: IReactorTime) -> Authenticator:
    """The ``--auth`` strategy ``settings`` name."""
    keystone = settings.keystone
    if keystone is None:
        believer = (
            NoAuth(settings.default_project)
            if settings.auth == "none"
            else STRATEGIES[settings.auth]()
        )
        if settings.trusted_networks is None:
            return believer
        return FromNetworks(believer, settings.trusted_networks)
    credentials = ServiceCredentials(
        username=keystone.user,
        password=keystone.password,
        project_name=keystone.project,
        user_domain_id=keystone.user_domain,
        project_domain_id=keystone.project_domain,
    )
    return KeystoneTokens(
        keystone.url,
        credentials,
        reactor,
        public_auth_url=keystone.public_url,
        cache_seconds=keystone.cache_seconds,
    )


__all__ = ["Assembly", "assemble", "authenticator", "metadata_store"]
