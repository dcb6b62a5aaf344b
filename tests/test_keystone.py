"""
``--auth keystone`` against a real Keystone (PyPI's, SQLite + fernet, on 127.0.0.1).

imaged runs under twistd as users run it, validates every ``X-Auth-Token`` with its own
service credentials, and is driven over real sockets with tokens Keystone issued.  The daemon
here believes a validation for 0 s, so every request asks Keystone and a revocation shows at
once; how long a validation is believed (``--keystone-cache-seconds``, never past the token's
``expires_at``) and the renewal of imaged's own expired token are tested with a ``Clock`` in
``test_keystone_cache.py``, where time moves without anyone waiting for it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imaged.testing import TwistdDaemon

from .keystone_server import Keystone

pytestmark = pytest.mark.servers  # starts twistd and other real servers

TOKEN_SECONDS = 3600
CACHE_SECONDS = 0.0
PASSWORD = "pw-secret"


@pytest.fixture(scope="module")
def keystone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keystone]:
    server = Keystone(tmp_path_factory.mktemp("keystone"), TOKEN_SECONDS).set_up()
    server.user("imaged", PASSWORD, "service", ["service"])
    server.user("alice", PASSWORD, "alpha", ["member"])
    server.user("rita", PASSWORD, "alpha", ["reader"])
    server.user("bob", PASSWORD, "beta", ["member"])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def daemon(keystone: Keystone, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwistdDaemon]:
    workdir = tmp_path_factory.mktemp("imaged")
    password_file = workdir / "keystone-password"
    password_file.write_text(PASSWORD + "\n")
    started = TwistdDaemon(
        str(workdir),
        args=[
            "--auth", "keystone",
            "--keystone-url", keystone.url + "/v3",
            "--keystone-public-url", "https://keystone.example.test:5000",
            "--keystone-user", "imaged",
            "--keystone-password-file", str(password_file),
            "--keystone-cache-seconds", str(CACHE_SECONDS),
        ],
    ).start()
    yield started
    started.stop()


def call(
    daemon: TwistdDaemon,
    method: str,
    path: str,
    token: str | None = None,
    body: Any = None,
    data: bytes | None = None,
    content_type: str = "application/json",
) -> tuple[int, dict[str, str], Any]:
    if body is not None:
        data = json.dumps(body).encode()
    request = urllib.request.Request(daemon.url + path, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", content_type)
    if token is not None:
        request.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            raw = reply.read()
            code, headers = reply.status, dict(reply.headers)
    except urllib.error.HTTPError as e:
        raw = e.read()
        code, headers = e.code, dict(e.headers)
    try:
        return code, headers, json.loads(raw) if raw else None
    except ValueError:
        return code, headers, raw


def token_of(keystone: Keystone, user: str, project: str | None) -> str:
    return keystone.token(user, PASSWORD, project)


def listed(daemon: TwistdDaemon, token: str) -> set[str]:
    code, _, body = call(daemon, "GET", "/v2/images", token)
    assert code == 200, body
    return {image["id"] for image in body["images"]}


def test_no_or_bad_token_is_401_with_the_keystone_challenge(daemon: TwistdDaemon) -> None:
    for token in (None, "not-a-token", "gAAAAABforged"):
        code, headers, body = call(daemon, "GET", "/v2/images", token)
        assert code == 401, body
        assert headers["WWW-Authenticate"] == 'Keystone uri="https://keystone.example.test:5000"'
        assert "requires authentication" in json.dumps(body)
    # Discovery and health stay open, as in Glance.
    assert call(daemon, "GET", "/versions")[0] == 200
    assert call(daemon, "GET", "/healthcheck")[0] == 200


def test_a_token_acts_as_its_user_project_and_roles(
    daemon: TwistdDaemon, keystone: Keystone
) -> None:
    alice = token_of(keystone, "alice", "alpha")
    code, _, image = call(daemon, "POST", "/v2/images", alice,
                          {"name": "alpha-only", "disk_format": "raw",
                           "container_format": "bare", "visibility": "private"})
    assert code == 201, image
    assert image["owner"] == keystone.project("alpha")
    path = f"/v2/images/{image['id']}"
    code, _, _ = call(daemon, "PUT", path + "/file", alice, data=b"x" * 4096,
                      content_type="application/octet-stream")
    assert code == 204
    assert image["id"] in listed(daemon, alice)

    # A reader of the same project sees and lists it, may not change it or create.
    rita = token_of(keystone, "rita", "alpha")
    assert call(daemon, "GET", path, rita)[0] == 200
    assert image["id"] in listed(daemon, rita)
    assert call(daemon, "PATCH", path, rita, data=b"[]",
                content_type="application/openstack-images-v2.1-json-patch")[0] == 403
    assert call(daemon, "POST", "/v2/images", rita, {"name": "no"})[0] == 403

    # Another project's member: the image does not exist for them.
    bob = token_of(keystone, "bob", "beta")
    assert image["id"] not in listed(daemon, bob)
    for method, suffix in (("GET", ""), ("GET", "/file"), ("DELETE", ""), ("PATCH", "")):
        data = b"[]" if method == "PATCH" else None
        code, _, _ = call(daemon, method, path + suffix, bob, data=data,
                          content_type="application/openstack-images-v2.1-json-patch")
        assert code == 404, (method, suffix)

    # The cloud admin (Keystone's bootstrap admin, role admin) sees everything.
    admin = keystone.admin_token()
    assert call(daemon, "GET", path, admin)[0] == 200
    assert image["id"] in listed(daemon, admin)


def test_a_token_scoped_to_another_project_of_the_same_user(
    daemon: TwistdDaemon, keystone: Keystone
) -> None:
    keystone.user("carol", PASSWORD, "gamma", ["member"])
    carol_gamma = token_of(keystone, "carol", "gamma")
    code, _, image = call(daemon, "POST", "/v2/images", carol_gamma, {"name": "gamma"})
    assert code == 201
    # carol has no role on alpha: Keystone will not scope a token there at all.
    code, _, _ = keystone.call("POST", "/v3/auth/tokens", {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "carol", "domain": {"id": "default"}, "password": PASSWORD}}},
        "scope": {"project": {"name": "alpha", "domain": {"id": "default"}}}}})
    assert code == 401
    # An unscoped token of hers carries no project and no roles: no reading, no image.
    unscoped = token_of(keystone, "carol", None)
    assert call(daemon, "GET", "/v2/images", unscoped)[0] == 403
    assert call(daemon, "GET", f"/v2/images/{image['id']}", unscoped)[0] == 404


def test_revoked_tokens_stop_working(daemon: TwistdDaemon, keystone: Keystone) -> None:
    never_used = token_of(keystone, "alice", "alpha")
    keystone.revoke(never_used)
    assert call(daemon, "GET", "/v2/images", never_used)[0] == 401

    used = token_of(keystone, "alice", "alpha")
    assert call(daemon, "GET", "/v2/images", used)[0] == 200
    keystone.revoke(used)
    code, headers, _ = call(daemon, "GET", "/v2/images", used)
    assert code == 401
    assert headers["WWW-Authenticate"].startswith("Keystone uri=")


def test_keystone_down_is_503_never_access(daemon: TwistdDaemon, keystone: Keystone) -> None:
    fresh = token_of(keystone, "bob", "beta")
    keystone.stop()
    try:
        code, _, body = call(daemon, "GET", "/v2/images", fresh)
        assert code == 503, body
        assert "identity service is unavailable" in json.dumps(body)
        assert call(daemon, "POST", "/v2/images", fresh, {"name": "x"})[0] == 503
        # Still no identity without a token: 401, not 503.
        assert call(daemon, "GET", "/v2/images")[0] == 401
    finally:
        keystone.start()
    assert call(daemon, "GET", "/v2/images", fresh)[0] == 200


def test_start_up_names_the_identity_mode_and_checks_the_credentials(
    daemon: TwistdDaemon, keystone: Keystone
) -> None:
    log = daemon.wait_for_log("Keystone accepts imaged's service credentials")
    assert (f"imaged identity: 'keystone': validates X-Auth-Token with Keystone at "
            f"{keystone.url} as service user 'imaged' (project 'service'); believes no "
            "identity header") in log
    assert "Keystone accepts imaged's service credentials (user imaged)" in log
    assert call(daemon, "GET", "/healthcheck")[2] == {"detailed": False, "reasons": ["OK"]}


@pytest.mark.parametrize("problem", ["wrong-password", "no-service-role"])
def test_bad_service_credentials_show_at_start_and_in_the_healthcheck(
    keystone: Keystone, tmp_path: Path, problem: str
) -> None:
    """Found at start, not at a client's first request: one error line, /healthcheck 503."""
    user = f"imaged-{problem}"
    keystone.user(user, PASSWORD, "service",
                  ["member"] if problem == "no-service-role" else ["service"])
    password_file = tmp_path / "keystone-password"
    password_file.write_text(PASSWORD + ("-typo" if problem == "wrong-password" else "") + "\n")
    daemon = TwistdDaemon(str(tmp_path), args=[
        "--auth", "keystone", "--keystone-url", keystone.url + "/v3",
        "--keystone-user", user, "--keystone-password-file", str(password_file),
    ]).start()
    try:
        expected = {
            "wrong-password": f"Keystone refused imaged's service credentials (user '{user}'",
            "no-service-role": f"imaged's service user '{user}' lacks the 'service' role in "
                               f"project 'service' (openstack role add --user {user}",
        }[problem]
        log = daemon.wait_for_log("imaged cannot validate tokens")
        code, _, body = call(daemon, "GET", "/healthcheck")
        assert code == 503 and body["reasons"][0].startswith("identity: " + expected), body
        error = [line for line in log.splitlines() if "cannot validate" in line]
        assert len(error) == 1 and expected in error[0]
        assert "checking again in 5 s" in error[0]
        # The daemon still runs (Keystone may be fixed without restarting imaged): discovery
        # answers, and a client's request is refused as a whole identity service would.
        assert call(daemon, "GET", "/versions")[0] == 200
        alice = token_of(keystone, "alice", "alpha")
        assert call(daemon, "GET", "/v2/images", alice)[0] == 503
    finally:
        daemon.stop()


def test_log_never_holds_tokens_or_the_password(daemon: TwistdDaemon) -> None:
    log = Path(daemon.log_path).read_text()
    assert PASSWORD not in log
    assert "gAAAA" not in log


def test_openstack_cli_through_keystone_and_the_catalog(
    daemon: TwistdDaemon, keystone: Keystone, tmp_path: Path
) -> None:
    """
    The way clouds are used: the openstack CLI logs into Keystone with a password, finds
    imaged in the service catalog (type "image") and sends it the token it got.
    """
    import os
    import shutil
    import subprocess

    openstack = shutil.which("openstack", path=os.path.dirname(__import__("sys").executable))
    if openstack is None:
        pytest.skip("the [clients] extra is not installed")
    admin = keystone.admin_token()
    _, _, service = keystone.call("POST", "/v3/services", {"service": {
        "type": "image", "name": "glance", "enabled": True}}, token=admin)
    keystone.call("POST", "/v3/endpoints", {"endpoint": {
        "service_id": service["service"]["id"], "interface": "public",
        "url": daemon.url, "region_id": "RegionOne"}}, token=admin)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(OS_AUTH_URL=keystone.url + "/v3", OS_USERNAME="alice", OS_PASSWORD=PASSWORD,
               OS_PROJECT_NAME="alpha", OS_USER_DOMAIN_ID="default",
               OS_PROJECT_DOMAIN_ID="default", OS_IDENTITY_API_VERSION="3",
               OS_INTERFACE="public", OS_REGION_NAME="RegionOne")
    data = tmp_path / "disk.raw"
    data.write_bytes(b"\0" * 1024 * 1024)

    def cli(*args: str) -> Any:
        result = subprocess.run([openstack, *args, "-f", "json"], capture_output=True,
                                text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    created = cli("image", "create", "--disk-format", "raw", "--container-format", "bare",
                  "--file", str(data), "via-keystone")
    assert created["owner"] == keystone.project("alpha")
    assert created["status"] == "active"
    assert "via-keystone" in [i["Name"] for i in cli("image", "list")]
    env.update(OS_USERNAME="bob", OS_PROJECT_NAME="beta")
    assert "via-keystone" not in [i["Name"] for i in cli("image", "list")]
