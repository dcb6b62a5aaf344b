"""The twistd plugin and its options (as mimic's and magic-wormhole's tap tests)."""

from __future__ import annotations

import re
from typing import Any

import attrs
import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import IPlugin, getPlugins
from twisted.python.usage import UsageError
from twisted.web.server import Site

from imaged import tap


def test_plugin_is_found_and_points_at_tap() -> None:
    makers = [p for p in getPlugins(IServiceMaker) if p.tapname == "imaged"]
    assert len(makers) == 1
    maker = makers[0]
    assert IPlugin.providedBy(maker) and IServiceMaker.providedBy(maker)
    assert maker.options is tap.Options
    assert maker.makeService is tap.makeService


def test_default_options(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    options = tap.Options()
    options.parseOptions([])
    assert dict(options) == {
        "config": None,
        "listen": "tcp:9292",
        "metrics-listen": None,
        "data-dir": str(tmp_path / "imaged-data"),
        "database": f"sqlite:///{tmp_path / 'imaged-data' / 'imaged.sqlite'}",
        "public-url": None,
        "hash-algo": "sha512",
        "log-format": "text",
        "image-size-cap": 1024**4,
        "show-locations": 0,
        "no-require-format-match": 0,
        "auth": "headers",
        "trusted-networks": "127.0.0.0/8,::1",
        "default-project": "admin",
        "deactivate-policy": "project-member",
        "copy-image-policy": "admin",
        "metadef-policy": "admin",
        "schema-image": None,
        "enabled-import-methods": "glance-direct,web-download,copy-image,glance-download",
        "glance-download-properties": "hw_*,trait:*,os_distro,os_secure_boot,os_type",
        "stage-expiry": 86400.0,
        "import-plugins": "",
        "conversion-output-format": "raw",
        "inject-metadata": "",
        "inject-ignore-user-roles": "admin",
        "import-allowed-schemes": "http,https",
        "import-disallowed-schemes": "",
        "import-allowed-hosts": "",
        "import-disallowed-hosts": "",
        "import-allowed-ports": "80,443",
        "import-disallowed-ports": "",
        "import-allowed-networks": "",
        "healthcheck-disable-file": None,
        "keystone-url": None,
        "keystone-public-url": None,
        "keystone-user": None,
        "keystone-password-file": None,
        "keystone-project": "service",
        "keystone-user-domain": "default",
        "keystone-project-domain": "default",
        "keystone-cache-seconds": 300.0,
        "shutdown-timeout": 30.0,
        "node-lease": 120.0,
        "max-request-body": 114_688,
        "header-timeout": 60.0,
        "body-timeout": 60.0,
        "max-connections": None,
        "user-storage-quota": None,
        "image-count-total": None,
        "image-count-uploading": None,
        "store": "file",
        "default-store": None,
        "rbd-pool": "images",
        "rbd-user": "imaged",
        "rbd-conf": "",
        "rbd-chunk-size": 8,
        "rbd-connect-timeout": 10.0,
        "swift-auth-url": None,
        "swift-user": None,
        "swift-key-file": None,
        "swift-container": "imaged",
        "swift-segment-size": 1024**3,
        "s3-endpoint": None,
        "s3-bucket": "imaged",
        "s3-access-key": None,
        "s3-secret-key-file": None,
        "s3-region": "us-east-1",
        "s3-addressing": "path",
        "s3-part-size": 16 * 1024 * 1024,
        "image-property-quota": 128,
        "image-tag-quota": 128,
        "image-member-quota": 128,
    }


@pytest.mark.parametrize("given, quota", [
    ("0", None), ("1024", 1024), ("10KB", 10 * 1024), ("5 GB", 5 * 1024**3), ("2tb", 2 * 1024**4),
])
def test_storage_quota_takes_glance_sizes(given: str, quota: int | None) -> None:
    options = tap.Options()
    options.parseOptions(["--user-storage-quota", given, "--image-count-total", "-1",
                          "--image-count-uploading", "3"])
    assert options["user-storage-quota"] == quota
    assert options["image-count-total"] is None and options["image-count-uploading"] == 3


def test_option_errors() -> None:
    for args in (["--user-storage-quota", "lots"], ["--image-count-total", "-5"],
                 ["--image-tag-quota", "0"]):
        with pytest.raises(UsageError):
            tap.Options().parseOptions(args)
    with pytest.raises(UsageError):
        tap.Options().parseOptions(["--hash-algo", "md17"])
    with pytest.raises(UsageError):
        tap.Options().parseOptions(["--image-size-cap", "-3"])
    with pytest.raises(UsageError):
        tap.Options().parseOptions(["--auth", "keystone-someday"])



@pytest.mark.parametrize("args, named", [
    (["--node-lease", "0"], "--node-lease"),
    (["--node-lease", "soon"], "could not convert string to float"),
    (["--copy-image-policy", "owner"], "--copy-image-policy: 'owner' is not one of"),
    (["--metadef-policy", "everyone"], "--metadef-policy: 'everyone' is not one of"),
    (["--store", "tape"], "--store: 'tape' is not one of file, swift, s3, rbd"),
    (["--store", "rbd", "--rbd-chunk-size", "3"], "power of 2"),
    (["--store", "rbd", "--rbd-connect-timeout", "0"], "--rbd-connect-timeout"),
    (["--default-store", "x"], "--default-store needs"),
])
def test_store_and_lease_option_errors(args: list[str], named: str, tmp_path: Any) -> None:
    """The options this issue added refuse bad values before anything starts, saying which."""
    with pytest.raises(UsageError, match=named):
        tap.Options().parseOptions(["--data-dir", str(tmp_path), *args])


@pytest.mark.parametrize("args, named", [
    ([], "--keystone-url"),
    (["--keystone-url", "http://k:5000/v3"], "--keystone-user"),
    (["--keystone-url", "http://k:5000/v3", "--keystone-user", "imaged"],
     "--keystone-password-file"),
    (["--keystone-url", "http://k:5000/v3", "--keystone-user", "imaged",
      "--keystone-password-file", "/nonexistent/pw"], "--keystone-password-file"),
])
def test_keystone_options_name_what_is_missing(
    args: list[str], named: str, monkeypatch: Any
) -> None:
    monkeypatch.delenv("IMAGED_KEYSTONE_PASSWORD", raising=False)
    with pytest.raises(UsageError, match=named):
        tap.Options().parseOptions(["--auth", "keystone", *args])


@pytest.mark.parametrize("auth", ["headers", "trusted-headers", "none"])
@pytest.mark.parametrize("option", ["--keystone-url", "--keystone-public-url",
                                    "--keystone-user", "--keystone-password-file"])
def test_keystone_options_without_auth_keystone_stop_the_start(auth: str, option: str) -> None:
    """A forgotten ``--auth keystone`` would start a daemon believing headers instead."""
    args = [option, "http://k:5000/v3"] + ([] if auth == "headers" else ["--auth", auth])
    with pytest.raises(UsageError, match=f"{option} given, but --auth is '{auth}': add --auth "
                       "keystone"):
        tap.Options().parseOptions(args)


def test_trusted_networks_are_parsed_and_checked(tmp_path: Any) -> None:
    import ipaddress

    options = tap.Options()
    options.parseOptions(["--data-dir", str(tmp_path)])
    assert options.settings.trusted_networks == (
        ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1"))
    options = tap.Options()
    options.parseOptions(["--data-dir", str(tmp_path), "--trusted-networks",
                          "10.0.0.7, 192.168.4.0/24,fd00::/8"])
    assert [str(n) for n in options.settings.trusted_networks or ()] == [
        "10.0.0.7/32", "192.168.4.0/24", "fd00::/8"]
    options = tap.Options()
    options.parseOptions(["--data-dir", str(tmp_path), "--trusted-networks", "any"])
    assert options.settings.trusted_networks is None
    for bad in ("", "10.0.0.300", "everyone", ","):
        with pytest.raises(UsageError, match="--trusted-networks"):
            tap.Options().parseOptions(["--trusted-networks", bad])


def test_deactivate_policy_option(tmp_path: Any) -> None:
    options = tap.Options()
    options.parseOptions(["--data-dir", str(tmp_path), "--deactivate-policy", "admin"])
    assert options.settings.rules.deactivate == "admin"
    with pytest.raises(UsageError, match="--deactivate-policy: 'owner' is not one of "
                       "project-member, admin"):
        tap.Options().parseOptions(["--deactivate-policy", "owner"])


def test_keystone_password_stays_out_of_the_options(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("IMAGED_KEYSTONE_PASSWORD", "from-env")
    options = tap.Options()
    options.parseOptions(["--auth", "keystone", "--keystone-url", "http://k:5000/v3",
                          "--keystone-user", "imaged", "--data-dir", str(tmp_path)])
    assert options.settings.keystone is not None
    assert options.settings.keystone.password == "from-env"
    assert "from-env" not in repr(dict(options)) + repr(options.settings)
    (tmp_path / "pw").write_text("from-file\n")
    options = tap.Options()
    options.parseOptions(["--auth", "keystone", "--keystone-url", "http://k:5000/v3",
                          "--keystone-user", "imaged", "--keystone-password-file",
                          str(tmp_path / "pw"), "--data-dir", str(tmp_path)])
    assert options.settings.keystone is not None
    assert options.settings.keystone.password == "from-file"


class ThreadedMemoryReactor(MemoryReactorClock):
    """MemoryReactorClock plus callFromThread, which the stores' threads report back through."""

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


def test_make_service_builds_site_on_endpoint(tmp_path: Any) -> None:
    options = tap.Options()
    options.parseOptions(["--listen", "tcp:9999:interface=127.0.0.1",
                          "--data-dir", str(tmp_path), "--hash-algo", "sha256"])
    reactor = ThreadedMemoryReactor()
    service = tap.makeService(options, reactor)
    listeners = [s for s in service if isinstance(s, StreamServerEndpointService)]
    assert len(listeners) == 1 and isinstance(listeners[0].factory, Site)
    assert listeners[0].factory.displayTracebacks is False
    service.privilegedStartService()
    service.startService()
    port, factory, _, interface = reactor.tcpServers[0][:4]
    assert (port, interface) == (9999, "127.0.0.1") and factory is listeners[0].factory
    service.stopService()
    assert (tmp_path / "imaged.sqlite").exists() and (tmp_path / "images").is_dir()


def test_options_from_environment(tmp_path: Any) -> None:
    options = tap.options_from_environment(
        {"IMAGED_ARGS": f"--listen 'tcp:1234' --data-dir {tmp_path}"})
    assert options["listen"] == "tcp:1234" and options["data-dir"] == str(tmp_path)


CONFIG = """
# imaged's configuration
listen = "tcp:9393:interface=127.0.0.1"
data-dir = "/var/lib/imaged"
image-size-cap = 1048576
user-storage-quota = "5GB"
show-locations = true
auth = "trusted-headers"
"""


def test_config_file_sets_options_and_the_command_line_wins(tmp_path: Any) -> None:
    path = tmp_path / "imaged.conf"
    path.write_text(CONFIG)
    options = tap.Options()
    options.parseOptions(["--config", str(path), "--listen", "tcp:1"])
    assert options["listen"] == "tcp:1"
    assert options["data-dir"] == "/var/lib/imaged"
    assert options["image-size-cap"] == 1048576
    assert options["user-storage-quota"] == 5 * 1024**3
    assert options["show-locations"] == 1 and options["auth"] == "trusted-headers"
    from_env = tap.options_from_environment(
        {"IMAGED_CONFIG": str(path), "IMAGED_ARGS": "--image-size-cap 7"})
    assert from_env["image-size-cap"] == 7 and from_env["listen"] == "tcp:9393:interface=127.0.0.1"


@pytest.mark.parametrize("text, named", [
    ('lisen = "tcp:1"', "unknown option 'lisen'"),
    ("image-size-cap = -4", "'image-size-cap'"),
    ('show-locations = "yes"', "'show-locations' must be true or false"),
    ("listen = [1, 2]", "'listen' must be a string or a number"),
    ("listen = ", "not valid TOML"),
    ('auth = "kerberos"', "--auth: 'kerberos'"),
])
def test_config_file_errors_name_the_option(tmp_path: Any, text: str, named: str) -> None:
    path = tmp_path / "bad.conf"
    path.write_text(text + "\n")
    with pytest.raises(UsageError, match=named):
        tap.Options().parseOptions(["--config", str(path)])
    with pytest.raises(UsageError, match="--config"):
        tap.Options().parseOptions(["--config", str(tmp_path / "missing.conf")])


def test_the_shipped_config_documents_every_option() -> None:
    import os
    import tomllib

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "etc", "imaged.conf")
    text = open(path).read()
    assert tomllib.loads(text) == {}  # all commented out: the defaults
    names = [p[0] for p in tap.Options.optParameters] + [f[0] for f in tap.Options.optFlags]
    missing = [n for n in names if n != "config" and f"# {n} = " not in text]
    assert missing == []


def test_store_options_become_typed_settings(tmp_path: Any, monkeypatch: Any) -> None:
    from imaged.settings import S3Settings, SwiftSettings

    monkeypatch.setenv("IMAGED_SWIFT_KEY", "swift-secret")
    options = tap.Options()
    options.parseOptions(["--store", "swift", "--swift-auth-url", "http://s:8080/auth/v1.0",
                          "--swift-user", "a:u", "--swift-segment-size", "1048576",
                          "--data-dir", str(tmp_path)])
    assert options.settings.swift == SwiftSettings(
        auth_url="http://s:8080/auth/v1.0", user="a:u", key="swift-secret",
        container="imaged", segment_size=1048576)
    assert options.settings.s3 is None and "swift-secret" not in repr(options.settings)
    (tmp_path / "s3-secret").write_text("s3-secret\n")
    options = tap.Options()
    options.parseOptions(["--store", "s3", "--s3-endpoint", "http://s3:9000",
                          "--s3-access-key", "AK", "--s3-secret-key-file",
                          str(tmp_path / "s3-secret"), "--s3-addressing", "virtual",
                          "--data-dir", str(tmp_path)])
    assert options.settings.s3 == S3Settings(
        endpoint="http://s3:9000", access_key="AK", secret_key="s3-secret", bucket="imaged",
        region="us-east-1", addressing="virtual", part_size=16 * 1024 * 1024)
    assert "s3-secret" not in repr(options.settings)
    for bad, named in ((["--s3-part-size", "1024"], "--s3-part-size"),
                       (["--s3-addressing", "sideways"], "--s3-addressing")):
        with pytest.raises(UsageError, match=named):
            tap.Options().parseOptions(["--store", "s3", "--s3-endpoint", "http://s3:9000",
                                        "--s3-access-key", "AK", "--s3-secret-key-file",
                                        str(tmp_path / "s3-secret"), *bad])


def test_the_shipped_schema_file_is_glances_default() -> None:
    import json
    import os

    from imaged.schemas import GLANCE_CUSTOM_PROPERTIES, load_custom_properties

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "etc", "schema-image.json")
    assert json.load(open(path)) == GLANCE_CUSTOM_PROPERTIES
    assert load_custom_properties(path) == GLANCE_CUSTOM_PROPERTIES


@pytest.mark.parametrize("content, named", [
    ('{"name": {"type": "string"}}', "'name' is an image attribute"),
    ('{"os_glance_x": {"type": "string"}}', "'os_glance_x' is an image attribute"),
    ('{"cores": {"type": "integer"}}', "'cores': type must be \"string\""),
    ('{"cores": {"type": ["string", "integer"]}}', "'cores': type must be \"string\""),
    ('{"flavour": {"type": "string", "enum": "abc"}}', "'flavour': not a valid JSON schema"),
    ('{"flavour": "string"}', "'flavour': a property's schema must be a JSON object"),
    ('["os_distro"]', "must hold a JSON object"),
    ("{not json", "not valid JSON"),
])
def test_a_schema_file_imaged_cannot_use_stops_the_start(
    tmp_path: Any, content: str, named: str
) -> None:
    path = tmp_path / "schema-image.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=f"--schema-image: {path}: .*{re.escape(named)}"):
        tap.Options().parseOptions(["--data-dir", str(tmp_path), "--schema-image", str(path)])
    with pytest.raises(UsageError, match=r"--schema-image: .*No such file"):
        tap.Options().parseOptions(["--schema-image", str(tmp_path / "missing.json")])


def test_import_options_become_the_methods_and_the_filter(tmp_path: Any) -> None:
    import ipaddress

    from imaged.fetch import ImportFilter

    options = tap.Options()
    options.parseOptions(["--data-dir", str(tmp_path)])
    assert options.settings.import_methods == ("glance-direct", "web-download",
                                               "copy-image", "glance-download")
    assert options.settings.import_filter == ImportFilter()
    options = tap.Options()
    options.parseOptions(["--data-dir", str(tmp_path), "--enabled-import-methods",
                          "web-download", "--import-allowed-ports", "", "--import-allowed-hosts",
                          "Mirror.Example.org", "--import-allowed-networks", "127.0.0.0/8"])
    assert options.settings.import_methods == ("web-download",)
    rules = options.settings.import_filter
    assert rules.allowed_ports == () and rules.allowed_hosts == ("mirror.example.org",)
    assert rules.allowed_networks == (ipaddress.ip_network("127.0.0.0/8"),)
    for args, named in [
        (["--enabled-import-methods", "ftp-magic"], "'ftp-magic' is not an import method"),
        (["--import-allowed-ports", "http"], "--import-"),
        (["--import-disallowed-ports", "70000"], "70000 is not a port"),
        (["--import-allowed-networks", "10.0.0.300/8"], "--import-"),
    ]:
        with pytest.raises(UsageError, match=named):
            tap.Options().parseOptions(args)


def test_import_plugin_options(tmp_path: Any) -> None:
    options = tap.Options()
    options.parseOptions(["--data-dir", str(tmp_path), "--import-plugins",
                          "image_decompression, image_conversion,inject_image_metadata",
                          "--conversion-output-format", "qcow2", "--inject-metadata",
                          "origin=imported, site=edge-1", "--inject-ignore-user-roles",
                          "admin,service"])
    plugins = options.settings.import_plugins
    assert plugins.names == ("image_decompression", "image_conversion", "inject_image_metadata")
    assert plugins.output_format == "qcow2"
    assert plugins.inject == {"origin": "imported", "site": "edge-1"}
    assert plugins.ignore_user_roles == {"admin", "service"}
    assert plugins.workdir == str(tmp_path / "import-work")
    for args, named in [
        (["--import-plugins", "image_signing"], "'image_signing' is not one of"),
        (["--conversion-output-format", "iso"], "'iso' is not one of"),
        (["--inject-metadata", "novalue"], "'novalue' is not key=value"),
        (["--inject-metadata", "os_glance_x=1"], "'os_glance_x' is not an extra property"),
        (["--inject-metadata", "name=x"], "'name' is not an extra property"),
        (["--stage-expiry", "0"], "--stage-expiry"),
    ]:
        with pytest.raises(UsageError, match=named):
            tap.Options().parseOptions(args)


def test_named_stores_from_the_configuration_file(tmp_path: Any, monkeypatch: Any) -> None:
    """Glance's enabled_backends in TOML: each table a store; keys a table leaves out are
    the top-level options; mistakes name the table and the key, before anything starts."""
    from twisted.internet import reactor

    from imaged.assembly import assemble
    from imaged.settings import StoreSettings

    monkeypatch.setenv("IMAGED_STORE_ARCHIVE_KEY", "archive-secret")
    monkeypatch.setenv("IMAGED_STORE_X_SECRET_KEY", "x")
    monkeypatch.setenv("IMAGED_STORE_Y_SECRET_KEY", "y")
    config = tmp_path / "imaged.conf"
    config.write_text(f'''
data-dir = "{tmp_path}"
default-store = "slow"
swift-auth-url = "http://127.0.0.1:1/auth/v1.0"
[stores.fast]
type = "file"
description = "local disk"
weight = 100
[stores.slow]
type = "file"
directory = "{tmp_path / 'slow'}"
[stores.archive]
type = "swift"
user = "a:u"
container = "old"
''')
    options = tap.Options()
    options.parseOptions(["--config", str(config)])
    settings = options.settings
    assert settings.default_store == "slow"
    fast, slow, archive = settings.named_stores
    assert fast == StoreSettings(name="fast", type="file", description="local disk",
                                 weight=100, directory=str(tmp_path / "stores" / "fast"))
    assert slow.directory == str(tmp_path / "slow")
    assert archive.swift is not None and archive.swift.key == "archive-secret"
    assert archive.swift.auth_url == "http://127.0.0.1:1/auth/v1.0"  # from the top level
    assert archive.swift.container == "old" and "archive-secret" not in repr(settings)
    parts = assemble(attrs.evolve(settings, named_stores=(fast, slow)), reactor)
    try:
        assert parts.blobs.multi and parts.blobs.default == "slow"
        assert [s.id for s in parts.service.store_info] == ["slow", "fast"]
    finally:
        parts.blobs.close()
        parts.metadata.close()
    for table, error in [
        ('[stores.x]\ntype = "tape"', "stores.x: 'type' must be one of"),
        ('[stores.x]\ntype = "file"\nbucket = "b"', "unknown key 'bucket' for a file store"),
        ('[stores.x]\ntype = "s3"\npart-size = "big"', "stores.x: 'part-size'"),
        ('[stores.x]\ntype = "file"\nweight = "heavy"', "'weight' must be an integer"),
        ('[stores.os_glance_staging]\ntype = "file"', "not starting with os_glance_"),
        ('default-store = "y"\n[stores.x]\ntype = "file"', "--default-store: 'y'"),
        ('[stores.x]\ntype = "swift"', r"\[stores.x\] needs --swift-auth-url"),
        ('[stores.x]\ntype = "rbd"\nchunk-size = 3', "power of 2"),
        ('[stores.x]\ntype = "s3"\nendpoint = "http://a"\naccess-key = "k"\n'
         '[stores.y]\ntype = "s3"\nendpoint = "http://b"\naccess-key = "k"',
         r"\[stores.x\] and \[stores.y\] are the same place \(s3, imaged\)"),
    ]:
        config.write_text(table)
        with pytest.raises(UsageError, match=error):
            tap.Options().parseOptions(["--config", str(config), "--data-dir", str(tmp_path)])
