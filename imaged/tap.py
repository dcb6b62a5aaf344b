"""
Running imaged under twistd: options and the service tree.

``twistd imaged`` (the plugin), ``twistd -y imaged.tac`` and programs that embed imaged all go
through ``makeService``, so they run the same thing.
"""

from __future__ import annotations

import gc
import os
import re
import shlex
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import serverFromString
from twisted.logger import ILogObserver, Logger
from twisted.python import usage

from .errors import BadRequest
from .hashing import check_algorithm
from .interfaces import IBlobStore
from .service import ImageService, Limits
from .store.files import FileBlobStore
from .store.sql import SchemaOutOfDate, SQLMetadataStore, describe
from .store.swift import SWIFT_MAX_OBJECT, SwiftBlobStore
from .systemd import notify
from .web.app import APIConfig, routes
from .web.auth import STRATEGIES, Authenticator, NoAuth
from .web.keystone import KeystoneTokens, ServiceCredentials
from .web.site import make_site

log = Logger()

DEFAULT_LISTEN = "tcp:9292"


_SIZE_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _storage_size(value: str) -> int | None:
    """Glance's ``user_storage_quota`` syntax: bytes, or with B/KB/MB/GB/TB; 0 = unlimited."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?B?)\s*", value.upper())
    if match is None:
        raise ValueError(f"{value!r} is not a size such as 500GB")
    number = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    return number or None


def _limit(value: str) -> int | None:
    """A count limit: a non-negative integer, or -1 for unlimited (Keystone's spelling)."""
    number = int(value)
    if number < -1:
        raise ValueError(f"{value} is neither a count nor -1")
    return None if number == -1 else number


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"{value} is not a positive integer")
    return number


class Options(usage.Options):
    """Command-line options of ``twistd imaged`` (and of ``IMAGED_ARGS`` for imaged.tac)."""

    synopsis = "[options]"
    #: Read from --keystone-password-file / --swift-key-file or the environment, kept out of
    #: the options dict.
    keystone_password: str | None = None
    swift_key: str | None = None
    s3_secret_key: str | None = None
    config_path: str | None = None
    longdesc = "imaged: an OpenStack Image service (Glance Image API v2)."

    optParameters = [
        [
            "config",
            "c",
            None,
            "TOML configuration file; its keys are these options' long names, and the "
            "command line overrides it.",
        ],
        ["listen", "l", DEFAULT_LISTEN, "Twisted endpoint string to listen on."],
        [
            "metrics-listen",
            None,
            None,
            "Endpoint serving Prometheus metrics at /metrics (e.g. tcp:9393:interface="
            "127.0.0.1); off by default.",
        ],
        ["data-dir", "d", "imaged-data", "Directory for the database and image files."],
        [
            "database",
            None,
            None,
            "SQLAlchemy database URL (default: SQLite in the data directory).",
        ],
        ["public-url", None, None, "Base URL clients use to reach this API (for links)."],
        [
            "auth",
            None,
            "headers",
            "Identity: 'headers' (trust keystonemiddleware's headers), 'trusted-headers' "
            "(the same, but only with X-Identity-Status: Confirmed, else 401), 'keystone' "
            "(validate X-Auth-Token against --keystone-url) or 'none' "
            "(development: every request is an admin of --default-project).",
        ],
        ["keystone-url", None, None, "Keystone v3 endpoint imaged validates tokens with."],
        [
            "keystone-public-url",
            None,
            None,
            "Keystone URL clients are sent to in WWW-Authenticate (default: --keystone-url).",
        ],
        ["keystone-user", None, None, "imaged's service user in Keystone (role 'service')."],
        [
            "keystone-password-file",
            None,
            None,
            "File holding the service user's password (or set IMAGED_KEYSTONE_PASSWORD).",
        ],
        ["keystone-project", None, "service", "Project the service user logs into."],
        ["keystone-user-domain", None, "default", "Domain id of the service user."],
        ["keystone-project-domain", None, "default", "Domain id of the service project."],
        [
            "keystone-cache-seconds",
            None,
            300.0,
            "How long a validated token is believed without asking Keystone again.",
            float,
        ],
        ["default-project", None, "admin", "Project of requests in --auth none."],
        [
            "healthcheck-disable-file",
            None,
            None,
            "While this file exists /healthcheck answers 503 (drain before maintenance).",
        ],
        ["hash-algo", None, "sha512", "Multihash algorithm (os_hash_algo)."],
        [
            "log-format",
            None,
            "text",
            "'text' (twistd's lines) or 'json' (one JSON object per line on standard "
            "output, for journald or a log shipper).",
        ],
        [
            "shutdown-timeout",
            None,
            30.0,
            "Seconds a stopping imaged lets uploads in progress finish before it aborts them.",
            float,
        ],
        [
            "image-size-cap",
            None,
            Limits().image_size_cap,
            "Largest image accepted, in bytes.",
            _positive_int,
        ],
        [
            "user-storage-quota",
            None,
            None,
            "Image bytes one project may store, e.g. 500GB (default: unlimited).",
            _storage_size,
        ],
        [
            "image-count-total",
            None,
            None,
            "Images one project may have (-1 or unset: unlimited).",
            _limit,
        ],
        [
            "image-count-uploading",
            None,
            None,
            "Uploads one project may have in progress at once (-1 or unset: unlimited).",
            _limit,
        ],
        [
            "store",
            None,
            "file",
            "Where image bytes live: 'file' (--data-dir), 'swift' or 's3'.",
        ],
        ["swift-auth-url", None, None, "Swift tempauth URL (http://host:8080/auth/v1.0)."],
        ["swift-user", None, None, "Swift user (account:user)."],
        [
            "swift-key-file",
            None,
            None,
            "File holding the Swift user's key (or set IMAGED_SWIFT_KEY).",
        ],
        ["swift-container", None, "imaged", "Swift container for images."],
        [
            "swift-segment-size",
            None,
            1024**3,
            "Images longer than this (or of unknown length) are stored as segments.",
            _positive_int,
        ],
        ["s3-endpoint", None, None, "S3 endpoint URL (https://s3.eu-west-1.amazonaws.com)."],
        ["s3-bucket", None, "imaged", "S3 bucket for images (created if missing)."],
        ["s3-access-key", None, None, "S3 access key id."],
        [
            "s3-secret-key-file",
            None,
            None,
            "File holding the S3 secret key (or set IMAGED_S3_SECRET_KEY).",
        ],
        ["s3-region", None, "us-east-1", "S3 region (signing scope)."],
        [
            "s3-addressing",
            None,
            "path",
            "'path' (endpoint/bucket/key: Ceph RGW, MinIO) or 'virtual' (bucket.endpoint).",
        ],
        [
            "s3-part-size",
            None,
            16 * 1024 * 1024,
            "Multipart part size in bytes (at least 5 MiB); parts are buffered in memory.",
            _positive_int,
        ],
        [
            "image-property-quota",
            None,
            Limits().image_property_quota,
            "Extra properties per image.",
            _positive_int,
        ],
        ["image-tag-quota", None, Limits().image_tag_quota, "Tags per image.", _positive_int],
        [
            "image-member-quota",
            None,
            Limits().image_member_quota,
            "Members per image.",
            _positive_int,
        ],
    ]
    optFlags = [
        ["show-locations", None, "Show image locations (show_multiple_locations)."],
        [
            "no-require-format-match",
            None,
            "Accept data that is not its disk_format (unsafe images are refused regardless).",
        ],
    ]

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """The configuration file first (``--config``), then the command line over it."""
        args = list(sys.argv[1:] if options is None else options)
        path = _config_path(args)
        if path is not None:
            self.apply_config(path)
        super().parseOptions(args)

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> Options:
        """
        Options from a mapping with the configuration file's keys, for programs that embed
        imaged (``makeService(Options.from_mapping({...}))``): checked as the file is.
        """
        options = cls()
        options.apply_settings(settings, "settings")
        options.postOptions()
        return options

    def apply_config(self, path: str) -> None:
        """
        Set options from a TOML file.  Unknown keys, wrong types and values the option's own
        parser refuses are errors naming the file and the key, before anything starts.
        """
        try:
            with open(path, "rb") as f:
                table = tomllib.load(f)
        except OSError as e:
            raise usage.UsageError(f"--config: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise usage.UsageError(f"{path}: not valid TOML: {e}") from None
        self.apply_settings(table, path)
        self.config_path = path

    def apply_settings(self, table: Mapping[str, Any], path: str) -> None:
        """Set options from ``table`` (``path`` names its origin in errors)."""
        declared: list[list[Any]] = self.optParameters  # type: ignore[assignment]
        parameters = {p[0]: p for p in declared}
        flags = {f[0] for f in self.optFlags}
        for key, value in table.items():
            if key == "config" or (key not in parameters and key not in flags):
                raise usage.UsageError(f"{path}: unknown option '{key}'")
            if key in flags:
                if not isinstance(value, bool):
                    raise usage.UsageError(f"{path}: '{key}' must be true or false")
                self[key] = int(value)
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise usage.UsageError(f"{path}: '{key}' must be a string or a number")
            coerce = parameters[key][4] if len(parameters[key]) > 4 else None
            try:
                self[key] = coerce(str(value)) if coerce else str(value)
            except ValueError as e:
                raise usage.UsageError(f"{path}: '{key}': {e}") from None

    def postOptions(self) -> None:
        if self["auth"] not in (*STRATEGIES, "keystone"):
            raise usage.UsageError(
                f"--auth: '{self['auth']}' is not one of "
                f"{', '.join(sorted((*STRATEGIES, 'keystone')))}"
            )
        if self["auth"] == "keystone":
            self._check_keystone()
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError(f"--log-format: '{self['log-format']}' is not text or json")
        if self["store"] not in ("file", "swift", "s3"):
            raise usage.UsageError(f"--store: '{self['store']}' is not one of file, swift, s3")
        if self["store"] == "swift":
            self._check_swift()
        if self["store"] == "s3":
            self._check_s3()
        try:
            check_algorithm(self["hash-algo"])
        except BadRequest as e:
            raise usage.UsageError(f"--hash-algo: {e.message}") from None
        self["data-dir"] = os.path.abspath(self["data-dir"])
        if self["database"] is None:
            self["database"] = "sqlite:///" + os.path.join(self["data-dir"], "imaged.sqlite")


    def _check_swift(self) -> None:
        for name in ("swift-auth-url", "swift-user"):
            if not self[name]:
                raise usage.UsageError(f"--store swift needs --{name}")
        self.swift_key = _secret(
            self["swift-key-file"], "IMAGED_SWIFT_KEY", "--swift-key-file", "--store swift"
        )
        if self["swift-segment-size"] > SWIFT_MAX_OBJECT:
            raise usage.UsageError("--swift-segment-size: at most 5 GiB (Swift's object limit)")

    def _check_s3(self) -> None:
        for name in ("s3-endpoint", "s3-access-key"):
            if not self[name]:
                raise usage.UsageError(f"--store s3 needs --{name}")
        self.s3_secret_key = _secret(
            self["s3-secret-key-file"], "IMAGED_S3_SECRET_KEY", "--s3-secret-key-file",
            "--store s3",
        )
        if self["s3-addressing"] not in ("path", "virtual"):
            raise usage.UsageError("--s3-addressing: 'path' or 'virtual'")
        if self["s3-part-size"] < 5 * 1024 * 1024:
            raise usage.UsageError("--s3-part-size: at least 5 MiB (S3's smallest part)")
        try:
            import botocore  # noqa: F401
        except ImportError:
            raise usage.UsageError(
                "--store s3 needs botocore: pip install 'imaged[s3]'"
            ) from None

    def _check_keystone(self) -> None:
        for name in ("keystone-url", "keystone-user"):
            if not self[name]:
                raise usage.UsageError(f"--auth keystone needs --{name}")
        password = _secret(
            self["keystone-password-file"],
            "IMAGED_KEYSTONE_PASSWORD",
            "--keystone-password-file",
            "--auth keystone",
        )
        self.keystone_password = password
        if self["keystone-cache-seconds"] < 0:
            raise usage.UsageError("--keystone-cache-seconds must not be negative")


def _secret(path: str | None, variable: str, option: str, needed_by: str) -> str:
    """A secret from a file (preferred: not visible in ``ps``) or the environment."""
    secret = os.environ.get(variable)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                secret = f.read().strip()
        except OSError as e:
            raise usage.UsageError(f"{option}: {e}") from None
    if not secret:
        raise usage.UsageError(f"{needed_by} needs {option} or {variable}")
    return secret


def _config_path(args: Sequence[str]) -> str | None:
    """``--config``/``-c`` from a command line, before the full parse."""
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg.startswith("-c") and len(arg) > 2:
            return arg[2:]
    return None


class _Stores(Service):
    """
    Owns the stores, so that stopping imaged closes their threads and connections.

    On start, a single-node deployment (SQLite: no other node can be uploading) recovers
    from an unclean stop: images left ``saving`` go back to ``queued`` and blobs no image
    refers to are removed (see ``ImageService.recover``).
    """

    def __init__(
        self,
        metadata: SQLMetadataStore,
        blobs: IBlobStore,
        service: ImageService,
        single_node: bool,
        drain: Callable[[], Deferred[None]] | None = None,
    ) -> None:
        self.metadata = metadata
        self.blobs = blobs
        self.service = service
        self.single_node = single_node
        self.drain = drain
        self.started_at = time.time()
        self.recovered: Deferred[Any] | None = None

    def startService(self) -> None:
        super().startService()
        if self.single_node:
            self.recovered = self.service.recover(self.started_at)
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
            closing: list[Deferred[Any]] = [self.blobs.close(), self.metadata.close()]
            return gatherResults(closing, consumeErrors=True).addCallback(lambda _: None)

        return drained.addBoth(close)


class _Imaged(MultiService):
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


class _FreezeStartupObjects(Service):
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


class _Listener(StreamServerEndpointService):
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


def _authenticator(options: usage.Options, reactor: Any) -> Authenticator:
    if options["auth"] == "none":
        return NoAuth(options["default-project"])
    if options["auth"] == "keystone":
        credentials = ServiceCredentials(
            username=options["keystone-user"],
            password=getattr(options, "keystone_password", None) or "",
            project_name=options["keystone-project"],
            user_domain_id=options["keystone-user-domain"],
            project_domain_id=options["keystone-project-domain"],
        )
        return KeystoneTokens(
            options["keystone-url"],
            credentials,
            reactor,
            public_auth_url=options["keystone-public-url"],
            cache_seconds=options["keystone-cache-seconds"],
        )
    return STRATEGIES[options["auth"]]()


def build_image_service(
    options: usage.Options, reactor: Any
) -> tuple[SQLMetadataStore, IBlobStore, ImageService, str]:
    """
    The stores and the service ``options`` describe, for the daemon and for
    ``imaged-manage``: (metadata store, blob store, image service, where images are kept).
    """
    data_dir = options["data-dir"]
    os.makedirs(data_dir, exist_ok=True)
    images_dir = os.path.join(data_dir, "images")
    # An embedded SQLite database belongs to this one node, which migrates it; a server
    # database is shared by nodes and migrated by the operator (imaged-manage db upgrade).
    embedded = options["database"].startswith("sqlite")
    try:
        metadata = SQLMetadataStore.open(options["database"], reactor, migrate=embedded)
    except SchemaOutOfDate as e:
        raise SystemExit(f"imaged: {e}") from None
    except SQLAlchemyError as e:
        raise SystemExit(
            f"imaged: cannot use the database {describe(options['database'])}: "
            f"{str(e.orig if hasattr(e, 'orig') and e.orig else e).strip()}"
        ) from None
    blobs: IBlobStore
    if options["store"] == "s3":
        from .store.s3 import S3BlobStore  # botocore is an extra

        blobs = S3BlobStore(
            options["s3-endpoint"],
            options["s3-bucket"],
            options["s3-access-key"],
            getattr(options, "s3_secret_key", None) or "",
            reactor,
            region=options["s3-region"],
            addressing=options["s3-addressing"],
            part_size=options["s3-part-size"],
        )
        images_at = f"S3 bucket {options['s3-bucket']} at {options['s3-endpoint']}"
    elif options["store"] == "swift":
        blobs = SwiftBlobStore(
            options["swift-auth-url"],
            options["swift-user"],
            getattr(options, "swift_key", None) or "",
            reactor,
            container=options["swift-container"],
            segment_size=options["swift-segment-size"],
        )
        images_at = f"Swift container {options['swift-container']} at {options['swift-auth-url']}"
    else:
        blobs = FileBlobStore(images_dir, reactor)
        images_at = images_dir
    limits = Limits(
        image_size_cap=options["image-size-cap"],
        image_property_quota=options["image-property-quota"],
        image_tag_quota=options["image-tag-quota"],
        image_member_quota=options["image-member-quota"],
        user_storage_quota=options["user-storage-quota"],
        image_count_total=options["image-count-total"],
        image_count_uploading=options["image-count-uploading"],
    )
    image_service = ImageService(
        metadata,
        blobs,
        options["hash-algo"],
        limits,
        require_format_match=not options["no-require-format-match"],
    )
    return metadata, blobs, image_service, images_at


def makeService(options: usage.Options, reactor: Any = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    metadata, blobs, image_service, images_at = build_image_service(options, reactor)
    config = APIConfig(
        image_service=image_service,
        public_base_url=options["public-url"],
        limits=image_service.limits,
        show_locations=bool(options["show-locations"]),
        auth=_authenticator(options, reactor),
        healthcheck_disable_file=options["healthcheck-disable-file"],
    )
    api = routes(config)
    site = make_site(api.resource(), body_router=api.stream_upload)

    top = _Imaged(options["log-format"])
    single_node = metadata.dialect == "sqlite"
    _Stores(
        metadata,
        blobs,
        image_service,
        single_node,
        drain=lambda: api.drain(reactor, options["shutdown-timeout"]),
    ).setServiceParent(top)
    _FreezeStartupObjects().setServiceParent(top)
    listener = _Listener(
        serverFromString(reactor, options["listen"]),
        site,
        options["listen"],
        reactor,
        notify_ready=True,
    )
    listener.setServiceParent(top)
    if options["metrics-listen"]:
        from .metrics import metrics_site

        _Listener(
            serverFromString(reactor, options["metrics-listen"]),
            metrics_site(),
            f"{options['metrics-listen']} (metrics)",
            reactor,
        ).setServiceParent(top)
    log.info(
        "imaged storing metadata in {database} and images in {images}",
        database=describe(options["database"]),
        images=images_at,
    )
    return top


#: Where imaged.tac looks for its configuration when ``IMAGED_CONFIG`` does not say.
DEFAULT_CONFIG = "/etc/imaged/imaged.conf"


def options_from_environment(environ: dict[str, str] | None = None) -> Options:
    """
    Options for imaged.tac: the configuration file named by ``IMAGED_CONFIG`` (or
    ``/etc/imaged/imaged.conf`` when it exists), overridden by ``IMAGED_ARGS``.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    args: list[str] = shlex.split(env.get("IMAGED_ARGS", ""))
    config = env.get("IMAGED_CONFIG")
    if config is None and os.path.exists(DEFAULT_CONFIG):
        config = DEFAULT_CONFIG
    if config and _config_path(args) is None:
        args = ["--config", config, *args]
    options = Options()
    options.parseOptions(args)
    return options


__all__ = ["DEFAULT_CONFIG", "Options", "makeService", "options_from_environment"]
