"""
imaged's service tree, as ``twistd`` and embedding programs start it: stores, listeners, hooks.

``service_tree`` builds it from ``Settings``: the stores (closed last, after uploads in
progress drained), the API's listener (which tells systemd when it is ready), the optional
metrics listener, and the start-up chores (recovery of a single node, a frozen heap).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import serverFromString
from twisted.logger import ILogObserver

from .assembly import Assembly, assemble, authenticator
from .logcontext import Logger
from .recovery import Sweeper
from .service import SWEEP_INTERVAL
from .settings import Settings
from .store.database import describe
from .systemd import notify
from .web.app import APIConfig, routes
from .web.keystone import CredentialCheck, KeystoneTokens
from .web.site import make_site

log = Logger(namespace="imaged.daemon")


class StoresService(Service):
    """
    Owns the stores, so that stopping imaged closes their threads and connections.

    On start, a single-node deployment (SQLite: no other node can be uploading) recovers
    from an unclean stop: images left ``saving`` go back to ``queued`` and blobs no image
    refers to are removed (see ``ImageService.recover``).
    """

    def __init__(
        self, parts: Assembly, drain: Callable[[], Deferred[None]] | None = None
    ) -> None:
        self.parts = parts
        self.drain = drain
        # Wall-clock seconds, as blob stores date their blobs: what recovery compares with.
        self.started_at = time.time()
        self.recovered: Deferred[Any] | None = None

    def startService(self) -> None:
        super().startService()
        if self.parts.single_node:
            self.recovered = self.parts.service.recover(self.started_at)
            self.recovered.addErrback(
                lambda failure: log.failure("recovery after an unclean stop failed", failure)
            )

    def stopService(self) -> Deferred[Any]:
        """
        Twisted stops sibling services all at once, so the order is kept here: uploads in
        progress drain first (they need the stores), then the stores close.
        """
        super().stopService()
        drained = self.drain() if self.drain is not None else succeed(None)

        def close(_: Any) -> Deferred[None]:
            closing: list[Deferred[None]] = [self.parts.blobs.close(), self.parts.metadata.close()]
            return gatherResults(closing, consumeErrors=True).addCallback(lambda _: None)

        return drained.addBoth(close)


class ImagedService(MultiService):
    """
    imaged's service tree.  With ``log_format`` "json", joining an application (twistd's,
    or imaged.tac's) makes JSON lines that application's log observer, which twistd uses
    unless ``--logger`` names another.
    """

    def __init__(self, log_format: str = "text") -> None:
        super().__init__()
        self.log_format = log_format

    def setServiceParent(self, parent: Any) -> None:
        super().setServiceParent(parent)
        if self.log_format == "json" and hasattr(parent, "setComponent"):
            from .logs import json_observer

            parent.setComponent(ILogObserver, json_observer())


class FreezeStartupObjects(Service):
    """
    Moves everything allocated while starting (modules, SQLAlchemy's compiled schema, the
    routing map) out of the garbage collector's sight once imaged runs.

    Without it, every full collection walks those long-lived objects again; measured on the
    metadata benchmark, that made show's p99 latency at concurrency 16 roughly twice what it
    is with them frozen.  Only the daemon does this: a program embedding imaged's API owns its
    process's collector.
    """

    def startService(self) -> None:
        super().startService()
        gc.collect()
        gc.freeze()


class Listener(StreamServerEndpointService):
    """Logs the address actually bound (tests listen on port 0 and read it from the log)."""

    def __init__(
        self,
        endpoint: Any,
        factory: Any,
        description: str,
        reactor: Any,
        notify_ready: bool = False,
    ) -> None:
        super().__init__(endpoint, factory)
        self.description = description
        self.notify_ready = notify_ready
        self.reactor = reactor
        self.port: Any | None = None

    def stopService(self) -> Deferred[None]:
        if self.notify_ready:
            notify("STOPPING=1")
        stopped: Deferred[None] = super().stopService()
        return stopped

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        assert self._waitingForPort is not None

        def bound(port: Any) -> Any:
            self.port = port
            address = port.getHost()
            log.info(
                "imaged listening on {description} ({address})",
                description=self.description,
                address=f"{getattr(address, 'host', '')}:{getattr(address, 'port', '')}",
            )
            if self.notify_ready:
                # Ready means serving: once the reactor runs (now, or when it starts).
                self.reactor.callWhenRunning(notify, "READY=1")
            return port

        self._waitingForPort.addCallback(bound)


def service_tree(settings: Settings, reactor: Any) -> MultiService:
    """The whole daemon for ``settings``, on ``reactor``."""
    parts = assemble(settings, reactor)
    auth = authenticator(settings, reactor)
    config = APIConfig(
        image_service=parts.service,
        public_base_url=settings.public_url,
        limits=settings.limits,
        show_locations=settings.show_locations,
        auth=auth,
        healthcheck_disable_file=settings.healthcheck_disable_file,
        schemas=settings.schemas,
        metadefs=parts.metadefs,
    )
    api = routes(config)
    site = make_site(api.resource(), body_router=api.bodies, limits=settings.http,
                     reactor=reactor)
    top = ImagedService(settings.log_format)
    StoresService(
        parts, drain=lambda: api.drain(reactor, settings.shutdown_timeout)
    ).setServiceParent(top)
    # Every node repairs what dead uploads leave (its own, or a silent node's), by itself.
    # A node beats several times per lease, so that a slow round is not taken for death.
    interval = min(SWEEP_INTERVAL, settings.node_lease / 4)
    Sweeper(parts.service.sweep, reactor, interval).setServiceParent(top)
    FreezeStartupObjects().setServiceParent(top)
    if isinstance(auth, KeystoneTokens):
        CredentialCheck(auth, reactor).setServiceParent(top)
    endpoint = serverFromString(reactor, settings.listen)
    Listener(endpoint, site, settings.listen, reactor, notify_ready=True).setServiceParent(top)
    if settings.metrics_listen:
        from .metrics import metrics_site

        Listener(
            serverFromString(reactor, settings.metrics_listen),
            metrics_site(),
            f"{settings.metrics_listen} (metrics)",
            reactor,
        ).setServiceParent(top)
    http = settings.http
    log.info(
        "imaged client limits: {max_connections} connections, request bodies of "
        "{max_request_body} bytes (uploads aside), header timeout {header_timeout}, body "
        "timeout {body_timeout}",
        max_connections=http.max_connections or "unlimited",
        max_request_body=http.max_request_body or "unlimited",
        header_timeout=f"{http.header_timeout} s" if http.header_timeout else "off",
        body_timeout=f"{http.body_timeout} s" if http.body_timeout else "off",
    )
    log.info("imaged identity: {identity}", identity=auth.describe(), auth=settings.auth)
    log.info(
        "imaged storing metadata in {database} and images in {images}",
        database=describe(settings.database),
        images=parts.images_at,
    )
    return top


__all__ = ["ImagedService", "Listener", "StoresService", "service_tree"]
