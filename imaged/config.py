"""
The daemon's configuration as twistd reads it: command-line options over a TOML file, or
``IMAGED_ARGS`` and ``IMAGED_CONFIG`` for imaged.tac, checked into one ``Settings`` value.

A key of the configuration file is an option's long name; the command line wins over the file.
Every error names the file and the option before anything starts.
"""

from __future__ import annotations

import os
import shlex
import sys
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.python import usage

from .imports import GLANCE_DOWNLOAD_PROPERTIES
from .quotas import Limits
from .settings import (
    STORE_NAME,
    STORES,
    Settings,
    SettingsError,
    count_limit,
    positive_int,
    seconds,
    storage_size,
)
from .web.streaming import (
    BODY_TIMEOUT,
    FD_RESERVE,
    HEADER_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_REQUEST_BODY,
)

DEFAULT_LISTEN = "tcp:9292"


class Options(usage.Options):
    """Command-line options of ``twistd imaged`` (and of ``IMAGED_ARGS`` for imaged.tac)."""

    synopsis = "[options]"
    #: The configuration file the options were read from, if any.
    config_path: str | None = None
    #: The checked options (set by ``postOptions``), secrets included.
    settings: Settings
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
        [
            "trusted-networks",
            None,
            "127.0.0.0/8,::1",
            "Addresses whose requests the modes that believe identity headers ('headers', "
            "'trusted-headers', 'none') serve: comma-separated networks, or 'any'.  Others get "
            "401.  The default, loopback only, keeps those modes off the network; name your "
            "keystonemiddleware proxy's address here, or use --auth keystone.",
        ],
        ["keystone-url", None, None, "Keystone v3 endpoint imaged validates tokens with."],
        [
            "keystone-public-url",
            None,
            None,
            "Keystone URL clients are sent to in WWW-Authenticate (default: --keystone-url "
            "without its /v3).",
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
            "deactivate-policy",
            None,
            "project-member",
            "Who may deactivate and reactivate images: 'project-member' (admins and members "
            "of the owning project, Glance's default) or 'admin'.",
        ],
        [
            "copy-image-policy",
            None,
            "admin",
            "Who may copy an image to more stores (copy-image): 'admin' (Glance's default) or "
            "'project-member' (also the owning project's members).",
        ],
        [
            "metadef-policy",
            None,
            "admin",
            "Who may change the metadata definitions catalog: 'admin' (Glance's default) or "
            "'project-member' (also members of the project owning a namespace).",
        ],
        [
            "enabled-import-methods",
            None,
            "glance-direct,web-download,copy-image,glance-download",
            "Interoperable import methods offered, Glance's names (copy-image only with "
            "[stores.<name>] tables).",
        ],
        [
            "glance-download-properties",
            None,
            ",".join(GLANCE_DOWNLOAD_PROPERTIES),
            "glance-download: the remote image's properties copied (shell patterns).",
        ],
        [
            "stage-expiry",
            None,
            86400.0,
            "Seconds staged data (PUT /stage) waits for its import; then it is removed and "
            "the image queued again.",
            float,
        ],
        [
            "import-plugins",
            None,
            "",
            "Import plugins run on every import, Glance's names: image_decompression, "
            "image_conversion, inject_image_metadata (default: none).",
        ],
        [
            "conversion-output-format",
            None,
            "raw",
            "image_conversion: the disk format imports are converted to (raw for Ceph RBD).",
        ],
        [
            "inject-metadata",
            None,
            "",
            "inject_image_metadata: properties set on imports, 'key=value,key2=value2'.",
        ],
        [
            "inject-ignore-user-roles",
            None,
            "admin",
            "inject_image_metadata: users with any of these roles get no injected properties.",
        ],
        [
            "import-allowed-schemes",
            None,
            "http,https",
            "web-download: URI schemes allowed (Glance's import_filtering_opts).",
        ],
        ["import-disallowed-schemes", None, "", "web-download: URI schemes refused."],
        [
            "import-allowed-hosts",
            None,
            "",
            "web-download: the only hosts allowed (empty: any host not refused).",
        ],
        ["import-disallowed-hosts", None, "", "web-download: hosts refused."],
        [
            "import-allowed-ports",
            None,
            "80,443",
            "web-download: the only ports allowed (empty: any port not refused).",
        ],
        ["import-disallowed-ports", None, "", "web-download: ports refused."],
        [
            "import-allowed-networks",
            None,
            "",
            "web-download: networks allowed although refused by default (loopback, private, "
            "link-local and metadata-service addresses are, at every redirect).",
        ],
        [
            "schema-image",
            None,
            None,
            "JSON file of the image schema's optional properties, as Glance's "
            "schema-image.json (default: the properties Glance ships).",
        ],
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
            "node-lease",
            None,
            120.0,
            "Seconds after which a node that stopped writing its heartbeat is taken for dead "
            "and the uploads, imports and copies it held are released (it beats every "
            "quarter of this).",
            float,
        ],
        [
            "max-request-body",
            None,
            MAX_REQUEST_BODY,
            "Largest request body read, in bytes, for every request but image uploads "
            "(Glance's max_request_body_size); a larger one is answered 413 at once and "
            "never read into memory.",
            positive_int,
        ],
        [
            "header-timeout",
            None,
            HEADER_TIMEOUT,
            "Seconds a client has to send a request's headers, from their first byte (from "
            "connecting, for a connection's first request); then 408 and close (nginx's "
            "client_header_timeout).  0: off (Twisted's 60 s idle timeout remains).",
            seconds,
        ],
        [
            "body-timeout",
            None,
            BODY_TIMEOUT,
            "Seconds a request body, an upload's too, may go without a byte arriving (while "
            "imaged is reading it: not while a slow store holds an upload); then 408 and "
            "close (nginx's client_body_timeout).  0: off (Twisted's 60 s idle timeout "
            "remains).",
            seconds,
        ],
        [
            "max-connections",
            None,
            None,
            f"Client connections served at once; more are closed as they arrive (default "
            f"{MAX_CONNECTIONS}, fewer if the open-files limit is lower: half of what it "
            f"leaves after {FD_RESERVE}).",
            positive_int,
        ],
        [
            "image-size-cap",
            None,
            Limits().image_size_cap,
            "Largest image accepted, in bytes.",
            positive_int,
        ],
        [
            "user-storage-quota",
            None,
            None,
            "Image bytes one project may store, e.g. 500GB (default: unlimited).",
            storage_size,
        ],
        [
            "image-count-total",
            None,
            None,
            "Images one project may have (-1 or unset: unlimited).",
            count_limit,
        ],
        [
            "image-count-uploading",
            None,
            None,
            "Uploads one project may have in progress at once (-1 or unset: unlimited).",
            count_limit,
        ],
        [
            "store",
            None,
            "file",
            "Where image bytes live: 'file' (--data-dir), 'swift', 's3' or 'rbd' (one store; "
            "[stores.<name>] tables in the configuration file declare several).",
        ],
        [
            "default-store",
            None,
            None,
            "With [stores.<name>] tables: the store new data goes to unless the request names "
            "one (Glance's default_backend; the first table by default).",
        ],
        ["rbd-pool", None, "images", "Ceph pool for images (--store rbd)."],
        ["rbd-user", None, "imaged", "Ceph client name imaged connects as (client.<user>)."],
        [
            "rbd-conf",
            None,
            "",
            "ceph.conf naming the monitors and the keyring (empty: $CEPH_CONF or "
            "/etc/ceph/ceph.conf).",
        ],
        [
            "rbd-chunk-size",
            None,
            8,
            "RBD object size in MiB, a power of 2 (glance_store's rbd_store_chunk_size).",
            positive_int,
        ],
        [
            "rbd-connect-timeout",
            None,
            10.0,
            "Seconds for connecting to Ceph and for each of its operations.",
            float,
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
            positive_int,
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
            positive_int,
        ],
        [
            "image-property-quota",
            None,
            Limits().image_property_quota,
            "Extra properties per image.",
            positive_int,
        ],
        ["image-tag-quota", None, Limits().image_tag_quota, "Tags per image.", positive_int],
        [
            "image-member-quota",
            None,
            Limits().image_member_quota,
            "Members per image.",
            positive_int,
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
            if key == "stores":
                self["stores"] = self._store_tables(value, path)
                continue
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

    def _store_tables(self, value: Any, path: str) -> dict[str, dict[str, Any]]:
        """
        The ``[stores.<name>]`` tables (Glance's ``enabled_backends``): each a ``type``
        (file, swift, s3, rbd), an optional ``description`` and ``weight``, and that type's
        options without their prefix (``auth-url`` for ``--swift-auth-url``; ``directory``
        for a file store), checked as the options are.  Options a table leaves out are the
        top-level ones (shared credentials, say).
        """
        if not isinstance(value, Mapping) or not value:
            raise usage.UsageError(f"{path}: 'stores' must hold [stores.<name>] tables")
        declared: list[list[Any]] = self.optParameters  # type: ignore[assignment]
        parameters = {p[0]: p for p in declared}
        tables: dict[str, dict[str, Any]] = {}
        for name, table in value.items():
            where = f"{path}: stores.{name}"
            if not isinstance(table, Mapping):
                raise usage.UsageError(f"{where} must be a table")
            if not STORE_NAME.fullmatch(str(name)) or str(name).startswith("os_glance_"):
                raise usage.UsageError(
                    f"{where}: a store's name is letters, digits, '_' and '-' (at most 255), "
                    "not starting with os_glance_"
                )
            kind = table.get("type")
            if kind not in STORES:
                raise usage.UsageError(f"{where}: 'type' must be one of {', '.join(STORES)}")
            entry: dict[str, Any] = {
                "type": kind, "description": "", "weight": 0, "options": {}
            }
            for key, item in table.items():
                if key == "type":
                    continue
                if key == "description":
                    if not isinstance(item, str):
                        raise usage.UsageError(f"{where}: 'description' must be a string")
                    entry["description"] = item
                    continue
                if key == "weight":
                    if isinstance(item, bool) or not isinstance(item, int):
                        raise usage.UsageError(f"{where}: 'weight' must be an integer")
                    entry["weight"] = item
                    continue
                if kind == "file" and key == "directory":
                    if not isinstance(item, str) or not item:
                        raise usage.UsageError(f"{where}: 'directory' must be a path")
                    entry["options"]["directory"] = item
                    continue
                option = f"{kind}-{key}"
                if option not in parameters:
                    raise usage.UsageError(f"{where}: unknown key '{key}' for a {kind} store")
                if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                    raise usage.UsageError(f"{where}: '{key}' must be a string or a number")
                coerce = parameters[option][4] if len(parameters[option]) > 4 else None
                try:
                    entry["options"][option] = coerce(str(item)) if coerce else str(item)
                except ValueError as e:
                    raise usage.UsageError(f"{where}: '{key}': {e}") from None
            tables[str(name)] = entry
        return tables

    def postOptions(self) -> None:
        try:
            self.settings = Settings.from_options(self)
        except SettingsError as e:
            raise usage.UsageError(str(e)) from None
        # The resolved values, as the options report them (twistd prints none of this).
        self["data-dir"] = self.settings.data_dir
        self["database"] = self.settings.database



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


__all__ = ["DEFAULT_CONFIG", "DEFAULT_LISTEN", "Options", "options_from_environment"]
