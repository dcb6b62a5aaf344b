"""
tempest, OpenStack's API test suite, run as a subprocess against imaged and a real Keystone.

tempest comes from PyPI into its own virtualenv (``.venv-tempest`` beside the project, built on
first use from ``tempest-requirements.txt`` by ``servers.ensure_venv``).  ``catalog_image``
puts imaged into Keystone's catalog (service type ``image``, public endpoint at imaged's
unversioned root: clients discover ``/v2/`` from ``/``), ``Tempest`` makes a tempest workspace
with a ``tempest.conf`` for a cloud that offers only Keystone and the image API, runs
``tempest run`` in it and reads the result: the counts of tempest's summary and the ids of the
failing tests.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import attrs

from .keystone_server import ADMIN_PASSWORD, Keystone
from .servers import HERE, ensure_venv

REGION = "RegionOne"
EXCLUDE_LIST = HERE / "tempest-exclude.txt"
#: Roles tempest's dynamic credentials grant (``tempest_roles``, ``reader``, ``admin``) and
#: the one imaged's service user holds.
ROLES = ("member", "reader", "admin", "service")


def ensure_role(keystone: Keystone, name: str) -> str:
    """The id of role ``name``, made if Keystone's bootstrap did not make it."""
    found = keystone._admin("GET", f"/v3/roles?name={name}")["roles"]
    if found:
        return str(found[0]["id"])
    return str(keystone._admin("POST", "/v3/roles", {"role": {"name": name}})["role"]["id"])


def ensure_region(keystone: Keystone, region: str = REGION) -> None:
    code, _, _ = keystone.call("GET", f"/v3/regions/{region}", token=keystone.admin_token())
    if code == 404:
        keystone._admin("POST", "/v3/regions", {"region": {"id": region}})


def catalog_image(keystone: Keystone, url: str, region: str = REGION) -> None:
    """
    ``openstack service create --name glance image`` and ``openstack endpoint create
    --region REGION image public URL``: ``url`` is imaged's unversioned root.
    """
    ensure_region(keystone, region)
    service = keystone._admin(
        "POST", "/v3/services", {"service": {"type": "image", "name": "glance", "enabled": True}}
    )["service"]
    keystone._admin(
        "POST",
        "/v3/endpoints",
        {
            "endpoint": {
                "service_id": service["id"],
                "interface": "public",
                "region_id": region,
                "url": url,
                "enabled": True,
            }
        },
    )


def point_catalog(keystone: Keystone, url: str, region: str = REGION) -> None:
    """The image service's catalog entry moved to ``url`` (``openstack endpoint set --url``),
    or made if there is none."""
    services = keystone._admin("GET", "/v3/services?type=image")["services"]
    endpoints = [
        endpoint
        for service in services
        for endpoint in keystone._admin(
            "GET", f"/v3/endpoints?service_id={service['id']}"
        )["endpoints"]
    ]
    if not endpoints:
        catalog_image(keystone, url, region)
        return
    for endpoint in endpoints:
        keystone._admin("PATCH", f"/v3/endpoints/{endpoint['id']}", {"endpoint": {"url": url}})


def tempest_conf(
    keystone: Keystone, workdir: Path, format_enforcement: bool = True, images_url: str = ""
) -> str:
    """tempest.conf for a cloud of Keystone and the image API only; ``images_url`` serves
    ``cirros.qcow2`` and ``cirros.tar.gz`` in place of the internet's (web-download)."""
    return f"""\
[DEFAULT]
# debug: tempest.log then holds every request's and response's headers and body.
debug = true
log_file = {workdir / 'tempest.log'}
use_stderr = false

[auth]
use_dynamic_credentials = true
create_isolated_networks = false
admin_username = admin
admin_password = {ADMIN_PASSWORD}
admin_project_name = admin
admin_domain_name = Default
default_credentials_domain_name = Default
tempest_roles = member

[identity]
uri_v3 = {keystone.url}/v3
auth_version = v3
region = {REGION}
v3_endpoint_type = public

[identity-feature-enabled]
api_v2 = false

[service_available]
glance = true
nova = false
neutron = false
cinder = false
swift = false
heat = false
horizon = false
placement = false

[image]
endpoint_type = public
region = {REGION}
container_formats = bare,ami,ari,aki,ovf,ova,docker,compressed
disk_formats = qcow2,raw,ami,ari,aki,vhd,vhdx,vmdk,vdi,iso,ploop
build_timeout = 120
http_image = {images_url}/cirros.tar.gz
http_qcow2_image = {images_url}/cirros.qcow2

[image-feature-enabled]
api_v2 = true
import_image = true
os_glance_reserved = true
manage_locations = false
image_conversion = false
do_secure_hash = true
# true: ListUserImagesTest (random bytes labelled qcow2, vhd, ...) is skipped, as for a server
# that inspects uploads, which imaged does unless started with --no-require-format-match.
image_format_enforcement = {'true' if format_enforcement else 'false'}

[enforce_scope]
glance = false

[validation]
run_validation = false
"""


_COUNT = re.compile(r"^ - (Passed|Failed|Skipped): (\d+)\s*$", re.MULTILINE)
#: "{0} tempest.api...Class.test_x [0.2s] ... FAILED", "{0} setUpClass (tempest...Class) ... FAILED"
_FAILED = re.compile(r"^\{\d+\} (.+?)(?: \[[\d.]+s\])? \.\.\. FAILED\s*$", re.MULTILINE)
_ATTRIBUTES = re.compile(r"\[[^\]]*\]$")


@attrs.frozen
class TempestRun:
    """What one ``tempest run`` did."""

    returncode: int
    timed_out: bool
    output: str
    seconds: float
    passed: int
    failed: int
    skipped: int
    failing: list[str]

    def summary(self) -> str:
        ended = "killed: timed out" if self.timed_out else f"exit status {self.returncode}"
        return (
            f"tempest: {self.passed} passed, {self.failed} failed, {self.skipped} skipped "
            f"in {self.seconds:.0f} s ({ended})"
        )


class Tempest:
    """
    A tempest workspace in ``root/workspace`` (``tempest init``) configured against
    ``keystone``; tempest runs with ``HOME`` at ``root/home``.
    """

    def __init__(self, root: Path, keystone: Keystone, format_enforcement: bool = True,
                 images_url: str = "") -> None:
        self.venv = ensure_venv("tempest")
        self.workdir = root / "workspace"
        self.log_path = self.workdir / "tempest.log"
        # tempest keeps a registry of workspaces and a global configuration directory under
        # ~/.tempest: a home of its own keeps them beside the workspace.
        home = root / "home"
        home.mkdir()
        self.env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
        self.env["HOME"] = str(home)
        init = subprocess.run(
            [str(self.venv / "bin" / "tempest"), "init", str(self.workdir)],
            capture_output=True,
            text=True,
            env=self.env,
        )
        if init.returncode != 0:
            raise RuntimeError("tempest init failed:\n" + (init.stdout + init.stderr)[-5000:])
        (self.workdir / "etc" / "tempest.conf").write_text(
            tempest_conf(keystone, self.workdir, format_enforcement, images_url)
        )
        self.process: subprocess.Popen[str] | None = None

    def run(
        self, regex: str, exclude_list: Path = EXCLUDE_LIST, timeout: float = 1200
    ) -> TempestRun:
        """``tempest run --regex REGEX --exclude-list FILE --concurrency 1`` in the workspace."""
        command = [
            str(self.venv / "bin" / "tempest"), "run",
            "--regex", regex,
            "--exclude-list", str(exclude_list),
            "--concurrency", "1",
        ]
        started = time.monotonic()
        output_path = self.workdir / "tempest-run.out"
        with open(output_path, "w") as out:
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                text=True, start_new_session=True,
            )
            timed_out = False
            try:
                returncode = self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out, returncode = True, -1
            finally:
                self.stop()
        seconds = time.monotonic() - started
        output = output_path.read_text(errors="replace")
        counts = {name: int(n) for name, n in _COUNT.findall(output)}
        failing = {_ATTRIBUTES.sub("", name) for name in _FAILED.findall(output)}
        if returncode != 0 or counts.get("Failed"):
            failing.update(self._stestr_failing())
        return TempestRun(
            returncode=returncode,
            timed_out=timed_out,
            output=output,
            seconds=seconds,
            passed=counts.get("Passed", 0),
            failed=counts.get("Failed", 0),
            skipped=counts.get("Skipped", 0),
            failing=sorted(failing),
        )

    def _stestr_failing(self) -> list[str]:
        """The failing test ids stestr recorded for the last run (none if it recorded none)."""
        listed = subprocess.run(
            [str(self.venv / "bin" / "stestr"), "failing", "--list"],
            cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=120,
        )
        return [_ATTRIBUTES.sub("", line.strip()) for line in listed.stdout.splitlines()
                if line.strip()]

    def stop(self) -> None:
        """Ends tempest and the stestr workers it started (its own process group)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=30)
        self.process = None
