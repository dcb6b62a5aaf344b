"""
tempest's image API tests (``tempest.api.image``) against imaged and a real Keystone.

tempest is OpenStack's own API test suite: it drives a cloud as its clients do, discovering the
image endpoint in Keystone's catalog and making users and projects of its own through
Keystone's admin API (dynamic credentials).  Here the cloud is a real Keystone
(``keystone_server.py``) and imaged under twistd with ``--auth keystone``, catalogued at its
unversioned root as Glance is.  The test fails on any tempest failure, naming the failing tests
and showing the tail of tempest's output; the counts go to ``tempest-summary.txt`` in the
tempest workspace (and to standard output).

Tests of features this box lacks (the internet, Nova) or that imaged does not offer yet (each
marked with its issue) are listed in ``tempest-exclude.txt``.  Two environment variables try
other configurations by hand: ``IMAGED_TEMPEST_FORMAT_ENFORCEMENT=false`` sets tempest's
``image_format_enforcement`` to false (tempest then also uploads random bytes labelled qcow2,
vhd, ...: imaged refuses them unless started with ``--no-require-format-match``), and
``IMAGED_TEMPEST_IMAGED_ARGS`` adds options to imaged's command line.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from imaged.testing import TwistdDaemon

from .keystone_server import Keystone
from .tempest_server import ROLES, Tempest, catalog_image, ensure_role, point_catalog

pytestmark = pytest.mark.servers  # starts Keystone, twistd and tempest

PASSWORD = "imaged-service-secret"
REGEX = r"^tempest\.api\.image"
#: tempest's multi-store tests: glance-direct into several stores, copy-image, delete from
#: one store (they skip themselves on a single-store site).
MULTI_STORE_REGEX = (
    r"^tempest\.api\.image\.v2\.(test_images\.MultiStoresImportImagesTest"
    r"|admin\.test_images\.(ImportCopyImagesTest|MultiStoresImagesTest))"
)
TIMEOUT = 20 * 60
FORMAT_ENFORCEMENT = os.environ.get("IMAGED_TEMPEST_FORMAT_ENFORCEMENT", "true").lower() != "false"
IMAGED_ARGS = shlex.split(os.environ.get("IMAGED_TEMPEST_IMAGED_ARGS", ""))


@pytest.fixture(scope="module")
def keystone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keystone]:
    server = Keystone(tmp_path_factory.mktemp("keystone"))
    try:
        server.set_up()
        for role in ROLES:
            ensure_role(server, role)
        server.user("imaged", PASSWORD, "service", ["service"])
        yield server
    finally:
        server.stop()


class _Images(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def images_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 with the images tempest's web-download tests fetch
    (``[image] http_qcow2_image``, ``http_image``), so they run without the internet."""
    root = tmp_path_factory.mktemp("images")
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(root / "cirros.qcow2"), "16M"],
                   check=True, capture_output=True)
    (root / "cirros.tar.gz").write_bytes(gzip.compress(b"not a real kernel" * 100))
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Images, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def imaged(keystone: Keystone, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwistdDaemon]:
    workdir = tmp_path_factory.mktemp("imaged")
    password_file = workdir / "keystone-password"
    password_file.write_text(PASSWORD + "\n")
    daemon = TwistdDaemon(
        str(workdir),
        args=[
            "--auth", "keystone",
            "--keystone-url", keystone.url + "/v3",
            "--keystone-user", "imaged",
            "--keystone-password-file", str(password_file),
            # web-download from the local image server: loopback, any port (the default
            # refuses both, as SSRF protection).
            "--import-allowed-networks", "127.0.0.0/8", "--import-allowed-ports", "",
            *IMAGED_ARGS,
        ],
    )
    # Glance's shipped metadata definitions, loaded as devstack loads them: tempest's metadefs
    # tests associate namespaces with the first resource type listed.
    subprocess.run(
        [sys.executable, "-m", "imaged.manage", "--data-dir", str(workdir / "imaged-data"),
         "metadefs", "load"],
        check=True, capture_output=True, text=True,
    )
    try:
        daemon.start()
        catalog_image(keystone, daemon.url)
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def tempest(keystone: Keystone, imaged: TwistdDaemon, images_url: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tempest]:
    workspace = Tempest(tmp_path_factory.mktemp("tempest"), keystone, FORMAT_ENFORCEMENT,
                        images_url)
    try:
        yield workspace
    finally:
        workspace.stop()


def test_tempest_image_api(tempest: Tempest, imaged: TwistdDaemon) -> None:
    result = tempest.run(REGEX, timeout=TIMEOUT)
    summary = result.summary()
    (tempest.workdir / "tempest-summary.txt").write_text(
        summary + "\n" + "".join(f"FAILED {name}\n" for name in result.failing)
    )
    where = f"tempest's workspace and log: {tempest.workdir}; imaged's log: {imaged.log_path}"
    print(f"\n{summary}\n{where}")
    assert result.returncode == 0 and result.failed == 0 and result.passed > 0, (
        f"{summary}\nfailing:\n"
        + "".join(f"  {name}\n" for name in result.failing)
        + f"\n{where}\ntail of tempest's output:\n"
        + result.output[-12000:]
    )


@pytest.fixture(scope="module")
def imaged_stores(keystone: Keystone, imaged: TwistdDaemon,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwistdDaemon]:
    """A second imaged with three named stores (Glance's enabled_backends), to which the
    catalog's image endpoint is moved for tempest's multi-store tests."""
    workdir = tmp_path_factory.mktemp("imaged-stores")
    password_file = workdir / "keystone-password"
    password_file.write_text(PASSWORD + "\n")
    config = workdir / "imaged.conf"
    config.write_text('''
default-store = "fast"
[stores.fast]
type = "file"
description = "Fast"
weight = 100
[stores.cheap]
type = "file"
description = "Cheap"
[stores.edge]
type = "file"
description = "Edge"
''')
    daemon = TwistdDaemon(
        str(workdir),
        args=[
            "--config", str(config),
            "--auth", "keystone",
            "--keystone-url", keystone.url + "/v3",
            "--keystone-user", "imaged",
            "--keystone-password-file", str(password_file),
            *IMAGED_ARGS,
        ],
    )
    try:
        daemon.start()
        point_catalog(keystone, daemon.url)
        yield daemon
    finally:
        point_catalog(keystone, imaged.url)
        daemon.stop()


def test_tempest_multi_store(tempest: Tempest, imaged_stores: TwistdDaemon) -> None:
    result = tempest.run(MULTI_STORE_REGEX, timeout=TIMEOUT)
    summary = result.summary()
    where = (f"tempest's workspace and log: {tempest.workdir}; "
             f"imaged's log: {imaged_stores.log_path}")
    print(f"\n{summary}\n{where}")
    # Every one of them runs (none skips itself as on a single-store site) and passes.
    assert result.returncode == 0 and result.failed == 0 and result.passed == 4, (
        f"{summary}\nfailing:\n"
        + "".join(f"  {name}\n" for name in result.failing)
        + f"\n{where}\ntail of tempest's output:\n"
        + result.output[-12000:]
    )
