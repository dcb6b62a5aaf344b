"""
imaged's configuration as one typed value: ``Settings``, checked and with its secrets read.

``imaged.config`` parses the command line, the TOML file and the environment into options;
``Settings.from_options`` checks them together (the store's options are complete, the
algorithm exists, secrets are readable) and is what everything else reads.  Secrets come from
files or the environment, never the command line (``ps`` shows it), and never appear in
``repr``.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

import attrs

from .errors import BadRequest
from .fetch import ImportFilter
from .hashing import check_algorithm
from .imports import (
    CONVERTIBLE,
    GLANCE_DOWNLOAD_PROPERTIES,
    IMPLEMENTED_METHODS,
    PLUGINS,
    ImportPlugins,
    parse_methods,
)
from .policy import DEACTIVATE_POLICIES, Rules
from .quotas import Limits
from .schemas import (
    READ_ONLY,
    SETTABLE,
    ImageSchemas,
    SchemaFileError,
    is_reserved,
    load_custom_properties,
)
from .store.swift import SWIFT_MAX_OBJECT
from .web.auth import LOOPBACK, STRATEGY_NAMES, Network, parse_networks
from .web.streaming import HTTPLimits

#: The ``--store`` choices and ``[stores.<name>]`` types (``imaged.assembly`` builds each).
STORES = ("file", "swift", "s3", "rbd")
#: What a store may be called (Glance's store ids are config section names).
STORE_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")

_SIZE_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


class SettingsError(ValueError):
    """A configuration that cannot run, in words naming the option to fix."""


def storage_size(value: str) -> int | None:
    """Glance's ``user_storage_quota`` syntax: bytes, or with B/KB/MB/GB/TB; 0 = unlimited."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?B?)\s*", value.upper())
    if match is None:
        raise ValueError(f"{value!r} is not a size such as 500GB")
    number = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    return number or None


def count_limit(value: str) -> int | None:
    """A count limit: a non-negative integer, or -1 for unlimited (Keystone's spelling)."""
    number = int(value)
    if number < -1:
        raise ValueError(f"{value} is neither a count nor -1")
    return None if number == -1 else number


def positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"{value} is not a positive integer")
    return number


def seconds(value: str) -> float:
    """A duration in seconds, not negative."""
    number = float(value)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"{value} is not a number of seconds")
    return number


def read_secret(path: str | None, variable: str, option: str, needed_by: str) -> str:
    """A secret from a file (preferred: not visible in ``ps``) or the environment."""
    secret = os.environ.get(variable)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                secret = f.read().strip()
        except OSError as e:
            raise SettingsError(f"{option}: {e}") from None
    if not secret:
        raise SettingsError(f"{needed_by} needs {option} or {variable}")
    return secret


@attrs.frozen
class KeystoneSettings:
    """``--auth keystone``: where Keystone is and who imaged logs in as."""

    url: str
    user: str
    password: str = attrs.field(repr=False)
    public_url: str | None = None
    project: str = "service"
    user_domain: str = "default"
    project_domain: str = "default"
    cache_seconds: float = 300.0


@attrs.frozen
class SwiftSettings:
    auth_url: str
    user: str
    key: str = attrs.field(repr=False)
    container: str = "imaged"
    segment_size: int = 1024**3


@attrs.frozen
class S3Settings:
    endpoint: str
    access_key: str
    secret_key: str = attrs.field(repr=False)
    bucket: str = "imaged"
    region: str = "us-east-1"
    addressing: Literal["path", "virtual"] = "path"
    part_size: int = 16 * 1024 * 1024


@attrs.frozen
class RBDSettings:
    pool: str = "images"
    user: str = "imaged"
    conf: str = ""
    #: In MiB, as glance_store's ``rbd_store_chunk_size``.
    chunk_size: int = 8
    connect_timeout: float = 10.0


@attrs.frozen
class StoreSettings:
    """One store: a ``[stores.<name>]`` table, or the single store of ``--store``."""

    name: str
    type: str
    description: str = ""
    weight: int = 0
    #: A file store's directory.
    directory: str | None = None
    swift: SwiftSettings | None = None
    s3: S3Settings | None = None
    rbd: RBDSettings | None = None


@attrs.frozen
class Settings:
    """Everything a running imaged was configured with (the options, checked)."""

    data_dir: str
    database: str
    listen: str = "tcp:9292"
    metrics_listen: str | None = None
    public_url: str | None = None
    auth: str = "headers"
    #: Where the header-believing ``auth`` modes are served (``None``: everywhere).
    trusted_networks: tuple[Network, ...] | None = LOOPBACK
    default_project: str = "admin"
    keystone: KeystoneSettings | None = None
    healthcheck_disable_file: str | None = None
    hash_algo: str = "sha512"
    log_format: Literal["text", "json"] = "text"
    shutdown_timeout: float = 30.0
    #: Seconds of silence after which a node is dead (``imaged.service.UPLOAD_LEASE``).
    node_lease: float = 120.0
    limits: Limits = Limits()
    #: What one client may cost before it is served (``imaged.web.streaming``).
    http: HTTPLimits = attrs.field(factory=HTTPLimits)
    store: str = "file"
    swift: SwiftSettings | None = None
    s3: S3Settings | None = None
    rbd: RBDSettings | None = None
    #: The ``[stores.<name>]`` tables (multi-store), and the default among them; empty for
    #: the single store of ``--store``.
    named_stores: tuple[StoreSettings, ...] = ()
    default_store: str | None = None
    show_locations: bool = False
    require_format_match: bool = True
    rules: Rules = Rules()
    schemas: ImageSchemas = attrs.field(factory=ImageSchemas)
    import_methods: tuple[str, ...] = IMPLEMENTED_METHODS
    import_plugins: ImportPlugins = ImportPlugins()
    glance_download_properties: tuple[str, ...] = GLANCE_DOWNLOAD_PROPERTIES
    stage_expiry: float = 86400.0
    import_filter: ImportFilter = ImportFilter()

    @property
    def images_dir(self) -> str:
        return os.path.join(self.data_dir, "images")

    @property
    def embedded_database(self) -> bool:
        """SQLite: this node's own database, which it migrates and recovers itself."""
        return self.database.startswith("sqlite")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Settings:
        """Check options (the long names as keys) together; ``SettingsError`` says what is
        wrong."""
        if options["auth"] not in STRATEGY_NAMES:
            raise SettingsError(
                f"--auth: '{options['auth']}' is not one of {', '.join(sorted(STRATEGY_NAMES))}"
            )
        if options["log-format"] not in ("text", "json"):
            raise SettingsError(f"--log-format: '{options['log-format']}' is not text or json")
        if options["store"] not in STORES:
            raise SettingsError(
                f"--store: '{options['store']}' is not one of {', '.join(STORES)}"
            )
        try:
            check_algorithm(options["hash-algo"])
        except BadRequest as e:
            raise SettingsError(f"--hash-algo: {e.message}") from None
        if options["auth"] != "keystone":
            _no_keystone_options(options)
        for policy_option in ("deactivate-policy", "copy-image-policy", "metadef-policy"):
            if options[policy_option] not in DEACTIVATE_POLICIES:
                raise SettingsError(
                    f"--{policy_option}: '{options[policy_option]}' is not one of "
                    f"{', '.join(DEACTIVATE_POLICIES)}"
                )
        try:
            trusted_networks = parse_networks(options["trusted-networks"])
        except ValueError as e:
            raise SettingsError(f"--trusted-networks: {e}") from None
        data_dir = os.path.abspath(options["data-dir"])
        named = _named_stores(options, data_dir)
        default_store = options["default-store"]
        if default_store is not None and default_store not in {n.name for n in named}:
            raise SettingsError(
                f"--default-store: '{default_store}' is not a [stores.<name>] table"
                if named else "--default-store needs [stores.<name>] tables"
            )
        database = options["database"] or "sqlite:///" + os.path.join(data_dir, "imaged.sqlite")
        return cls(
            data_dir=data_dir,
            database=database,
            listen=options["listen"],
            metrics_listen=options["metrics-listen"],
            public_url=options["public-url"],
            auth=options["auth"],
            trusted_networks=trusted_networks,
            default_project=options["default-project"],
            keystone=_keystone(options) if options["auth"] == "keystone" else None,
            healthcheck_disable_file=options["healthcheck-disable-file"],
            hash_algo=options["hash-algo"],
            log_format=options["log-format"],
            shutdown_timeout=options["shutdown-timeout"],
            node_lease=_positive_seconds(options["node-lease"], "--node-lease"),
            limits=Limits(
                image_size_cap=options["image-size-cap"],
                image_property_quota=options["image-property-quota"],
                image_tag_quota=options["image-tag-quota"],
                image_member_quota=options["image-member-quota"],
                user_storage_quota=options["user-storage-quota"],
                image_count_total=options["image-count-total"],
                image_count_uploading=options["image-count-uploading"],
            ),
            http=_http(options),
            store=options["store"],
            swift=_swift(options) if options["store"] == "swift" and not named else None,
            s3=_s3(options) if options["store"] == "s3" and not named else None,
            rbd=_rbd(options) if options["store"] == "rbd" and not named else None,
            named_stores=named,
            default_store=(default_store or named[0].name) if named else None,
            show_locations=bool(options["show-locations"]),
            require_format_match=not options["no-require-format-match"],
            rules=Rules(
                deactivate=options["deactivate-policy"],
                copy_image=options["copy-image-policy"],
                metadefs=options["metadef-policy"],
            ),
            schemas=_schemas(options["schema-image"]),
            import_methods=_methods(options["enabled-import-methods"]),
            stage_expiry=_positive_seconds(options["stage-expiry"], "--stage-expiry"),
            import_filter=_import_filter(options),
            import_plugins=_plugins(options, data_dir),
            glance_download_properties=tuple(
                p.strip() for p in options["glance-download-properties"].split(",") if p.strip()
            ),
        )


def _positive_seconds(value: float, option: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise SettingsError(f"{option}: {value} is not a positive number of seconds")
    return value


def _methods(text: str) -> tuple[str, ...]:
    try:
        return parse_methods(text)
    except ValueError as e:
        raise SettingsError(f"--enabled-import-methods: {e}") from None


def _plugins(options: Mapping[str, Any], data_dir: str) -> ImportPlugins:
    names = tuple(n.strip() for n in options["import-plugins"].split(",") if n.strip())
    for name in names:
        if name not in PLUGINS:
            raise SettingsError(
                f"--import-plugins: '{name}' is not one of {', '.join(PLUGINS)}"
            )
    output = options["conversion-output-format"]
    if output not in CONVERTIBLE:
        raise SettingsError(
            f"--conversion-output-format: '{output}' is not one of {', '.join(CONVERTIBLE)}"
        )
    inject: dict[str, str] = {}
    for pair in options["inject-metadata"].split(","):
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SettingsError(f"--inject-metadata: '{pair}' is not key=value")
        if key in READ_ONLY or key in SETTABLE or is_reserved(key):
            raise SettingsError(f"--inject-metadata: '{key}' is not an extra property")
        inject[key] = value.strip()
    return ImportPlugins(
        names=names,
        output_format=output,
        inject=inject,
        ignore_user_roles=frozenset(_names(options["inject-ignore-user-roles"])),
        workdir=os.path.join(data_dir, "import-work"),
    )


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in text.split(",") if part.strip())


def _import_filter(options: Mapping[str, Any]) -> ImportFilter:
    """web-download's rules from the ``--import-*`` options."""
    values: dict[str, Any] = {}
    try:
        for kind in ("schemes", "hosts"):
            for which in ("allowed", "disallowed"):
                values[f"{which}_{kind}"] = _names(options[f"import-{which}-{kind}"])
        for which in ("allowed", "disallowed"):
            name = f"import-{which}-ports"
            values[f"{which}_ports"] = tuple(int(p) for p in _names(options[name]))
        networks = _names(options["import-allowed-networks"])
        values["allowed_networks"] = tuple(
            ipaddress.ip_network(n, strict=False) for n in networks
        )
    except ValueError as e:
        raise SettingsError(f"--import-*: {e}") from None
    for port in values["allowed_ports"] + values["disallowed_ports"]:
        if not 0 < port < 65536:
            raise SettingsError(f"--import-*-ports: {port} is not a port")
    return ImportFilter(**values)


def _no_keystone_options(options: Mapping[str, Any]) -> None:
    """Keystone options without ``--auth keystone`` mean a forgotten ``--auth``: imaged would
    otherwise start believing headers, the opposite of what the operator set up."""
    given = [
        f"--{name}"
        for name in ("keystone-url", "keystone-public-url", "keystone-user",
                     "keystone-password-file")
        if options[name]
    ]
    if given:
        raise SettingsError(
            f"{', '.join(given)} given, but --auth is '{options['auth']}': add --auth keystone "
            "(or remove the keystone options)"
        )


def _schemas(path: str | None) -> ImageSchemas:
    if not path:
        return ImageSchemas()
    try:
        return ImageSchemas(load_custom_properties(path))
    except SchemaFileError as e:
        raise SettingsError(f"--schema-image: {path}: {e}") from None


def _http(options: Mapping[str, Any]) -> HTTPLimits:
    """The client limits; a timeout of 0 is none, an unset ``--max-connections`` the default
    for this process's open-files limit."""
    given: dict[str, Any] = {
        "max_request_body": options["max-request-body"],
        "header_timeout": options["header-timeout"] or None,
        "body_timeout": options["body-timeout"] or None,
    }
    if options["max-connections"] is not None:
        given["max_connections"] = options["max-connections"]
    return HTTPLimits(**given)


_Section = TypeVar("_Section", KeystoneSettings, SwiftSettings, S3Settings, RBDSettings)


def _section(
    kind: type[_Section], prefix: str, options: Mapping[str, Any], **given: Any
) -> _Section:
    """
    A part of the settings from the options named after its fields (``public_url`` is
    ``--keystone-public-url``): the naming rule, not a table, says which option sets what.
    """
    values = {
        field.name: options[f"{prefix}-{field.name.replace('_', '-')}"]
        for field in attrs.fields(kind)
        if field.name not in given
    }
    return kind(**values, **given)


def _require(options: Mapping[str, Any], needed_by: str, *names: str) -> None:
    for name in names:
        if not options[name]:
            raise SettingsError(f"{needed_by} needs --{name}")


def _keystone(options: Mapping[str, Any]) -> KeystoneSettings:
    _require(options, "--auth keystone", "keystone-url", "keystone-user")
    password = read_secret(
        options["keystone-password-file"],
        "IMAGED_KEYSTONE_PASSWORD",
        "--keystone-password-file",
        "--auth keystone",
    )
    if options["keystone-cache-seconds"] < 0:
        raise SettingsError("--keystone-cache-seconds must not be negative")
    return _section(KeystoneSettings, "keystone", options, password=password)


def _swift(
    options: Mapping[str, Any],
    needed_by: str = "--store swift",
    key_variable: str = "IMAGED_SWIFT_KEY",
) -> SwiftSettings:
    _require(options, needed_by, "swift-auth-url", "swift-user")
    key = read_secret(options["swift-key-file"], key_variable, "--swift-key-file", needed_by)
    if options["swift-segment-size"] > SWIFT_MAX_OBJECT:
        raise SettingsError("--swift-segment-size: at most 5 GiB (Swift's object limit)")
    return _section(SwiftSettings, "swift", options, key=key)


def _rbd(options: Mapping[str, Any], needed_by: str = "--store rbd") -> RBDSettings:
    chunk = options["rbd-chunk-size"]
    if chunk & (chunk - 1) or chunk > 32:
        raise SettingsError(f"{needed_by}: --rbd-chunk-size is a power of 2 up to 32 (MiB)")
    if options["rbd-connect-timeout"] <= 0:
        raise SettingsError(f"{needed_by}: --rbd-connect-timeout must be positive")
    return _section(RBDSettings, "rbd", options)


def _named_stores(options: Mapping[str, Any], data_dir: str) -> tuple[StoreSettings, ...]:
    """The ``[stores.<name>]`` tables (``imaged.config`` checked their keys): each store's
    settings, from its table over the top-level options."""
    tables = options.get("stores") or {}
    named = []
    for name, table in tables.items():
        merged = {**options, **table["options"]}
        kind = table["type"]
        needed_by = f"[stores.{name}]"
        store = StoreSettings(
            name=name, type=kind, description=table["description"], weight=table["weight"]
        )
        if kind == "file":
            directory = table["options"].get("directory") or os.path.join(
                data_dir, "stores", name
            )
            store = attrs.evolve(store, directory=os.path.abspath(directory))
        elif kind == "swift":
            store = attrs.evolve(store, swift=_swift(merged, needed_by, f"IMAGED_{_env(name)}_KEY"))
        elif kind == "s3":
            store = attrs.evolve(
                store, s3=_s3(merged, needed_by, f"IMAGED_{_env(name)}_SECRET_KEY")
            )
        else:
            store = attrs.evolve(store, rbd=_rbd(merged, needed_by))
        named.append(store)
    # Each store's place is its own: two stores handing out alike addresses (swift://c/x,
    # s3://b/x) could not tell their data apart, and one's orphan sweep would take the other's.
    places: dict[tuple[str, ...], str] = {}
    for store in named:
        if store.directory is not None:
            place: tuple[str, ...] = ("file", store.directory)
        elif store.swift is not None:
            place = ("swift", store.swift.container)
        elif store.s3 is not None:
            place = ("s3", store.s3.bucket)
        else:
            assert store.rbd is not None
            place = ("rbd", store.rbd.conf, store.rbd.pool)
        if place in places:
            raise SettingsError(
                f"[stores.{places[place]}] and [stores.{store.name}] are the same place "
                f"({', '.join(place)}): each store needs its own"
            )
        places[place] = store.name
    return tuple(named)


def _env(name: str) -> str:
    return "STORE_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def _s3(
    options: Mapping[str, Any],
    needed_by: str = "--store s3",
    secret_variable: str = "IMAGED_S3_SECRET_KEY",
) -> S3Settings:
    _require(options, needed_by, "s3-endpoint", "s3-access-key")
    secret = read_secret(
        options["s3-secret-key-file"], secret_variable, "--s3-secret-key-file", needed_by,
    )
    if options["s3-addressing"] not in ("path", "virtual"):
        raise SettingsError("--s3-addressing: 'path' or 'virtual'")
    try:
        from .store.s3 import MIN_PART  # botocore signs S3 requests: an optional extra
    except ImportError:
        raise SettingsError(f"{needed_by} needs botocore: pip install 'imaged[s3]'") from None
    if options["s3-part-size"] < MIN_PART:
        raise SettingsError("--s3-part-size: at least 5 MiB (S3's smallest part)")
    return _section(S3Settings, "s3", options, secret_key=secret)


__all__ = [
    "STORES",
    "STORE_NAME",
    "KeystoneSettings",
    "RBDSettings",
    "S3Settings",
    "Settings",
    "SettingsError",
    "StoreSettings",
    "SwiftSettings",
    "count_limit",
    "positive_int",
    "read_secret",
    "seconds",
    "storage_size",
]
