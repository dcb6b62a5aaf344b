"""
A real Keystone on 127.0.0.1 for the keystone-mode tests.

PyPI's ``keystone`` goes into its own virtualenv (``.venv-keystone`` beside the project, built
on first use from ``keystone-requirements.txt``; its dependencies are OpenStack's, not ours),
then runs with SQLite and fernet tokens: ``keystone-manage db_sync``, ``fernet_setup``,
``credential_setup``, ``bootstrap``, and its WSGI application under the standard library's
threading WSGI server (``keystone_wsgi.py``).  ``Keystone`` also does the admin work the tests
need over Keystone's own REST API: projects, users, role grants, tokens, revocation.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .servers import HERE, ensure_venv, free_port

ADMIN_PASSWORD = "admin-secret"


class Keystone:
    """One Keystone process with its own SQLite database and keys under ``workdir``."""

    def __init__(self, workdir: Path, token_seconds: int = 3600) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token_seconds = token_seconds
        self.process: subprocess.Popen[bytes] | None = None
        self.venv = ensure_venv("keystone")
        self.config = workdir / "keystone.conf"
        self._admin_token: str | None = None
        self._admin_renew_at = 0.0

    # -- process ----------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return dict(
            os.environ,
            OS_KEYSTONE_CONFIG_DIR=str(self.workdir),
            OS_KEYSTONE_CONFIG_FILES=str(self.config),
        )

    def _manage(self, *args: str) -> None:
        subprocess.run(
            [str(self.venv / "bin" / "keystone-manage"), "--config-file", str(self.config), *args],
            check=True,
            env=self._env(),
            capture_output=True,
        )

    def set_up(self) -> Keystone:
        w = self.workdir
        self.config.write_text(
            "[DEFAULT]\n"
            f"log_file = {w / 'keystone.log'}\n"
            "[database]\n"
            f"connection = sqlite:///{w / 'keystone.db'}\n"
            "[fernet_tokens]\n"
            f"key_repository = {w / 'fernet-keys'}\n"
            "[fernet_receipts]\n"
            f"key_repository = {w / 'fernet-receipts'}\n"
            "[credential]\n"
            f"key_repository = {w / 'credential-keys'}\n"
            "[token]\n"
            "provider = fernet\n"
            f"expiration = {self.token_seconds}\n"
        )
        user = ["--keystone-user", str(os.getuid()), "--keystone-group", str(os.getgid())]
        self._manage("db_sync")
        self._manage("fernet_setup", *user)
        self._manage("credential_setup", *user)
        self._manage(
            "bootstrap",
            "--bootstrap-password", ADMIN_PASSWORD,
            "--bootstrap-public-url", self.url + "/v3",
            "--bootstrap-region-id", "RegionOne",
        )
        return self.start()

    def start(self, timeout: float = 60) -> Keystone:
        log = open(self.workdir / "wsgi.log", "ab")
        self.process = subprocess.Popen(
            [str(self.venv / "bin" / "python"), str(HERE / "keystone_wsgi.py"), str(self.port)],
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/v3", timeout=2):
                    return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            "Keystone did not start:\n" + (self.workdir / "wsgi.log").read_text()[-3000:]
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    # -- REST ---------------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("X-Auth-Token", token)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                raw = reply.read()
                return reply.status, dict(reply.headers), json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, dict(e.headers), json.loads(raw) if raw else None

    def token(self, user: str, password: str, project: str | None) -> str:
        auth: dict[str, Any] = {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"id": "default"}, "password": password}
                },
            }
        }
        if project is not None:
            auth["scope"] = {"project": {"name": project, "domain": {"id": "default"}}}
        code, headers, body = self.call("POST", "/v3/auth/tokens", {"auth": auth})
        assert code == 201, (code, body)
        return headers["X-Subject-Token"]

    def admin_token(self) -> str:
        """The bootstrap admin's token, renewed at half its lifetime (tests use short ones)."""
        if self._admin_token is None or time.monotonic() > self._admin_renew_at:
            self._admin_token = self.token("admin", ADMIN_PASSWORD, "admin")
            self._admin_renew_at = time.monotonic() + self.token_seconds / 2
        return self._admin_token

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        code, _, reply = self.call(method, path, body, token=self.admin_token())
        assert code in (200, 201, 204), (method, path, code, reply)
        return reply

    def project(self, name: str) -> str:
        found = self._admin("GET", f"/v3/projects?name={name}")["projects"]
        if found:
            return str(found[0]["id"])
        created = self._admin(
            "POST", "/v3/projects", {"project": {"name": name, "domain_id": "default"}}
        )
        return str(created["project"]["id"])

    def role(self, name: str) -> str:
        found = self._admin("GET", f"/v3/roles?name={name}")["roles"]
        return str(found[0]["id"])

    def user(self, name: str, password: str, project: str, roles: list[str]) -> str:
        """A user with ``roles`` on ``project`` (both made if missing)."""
        project_id = self.project(project)
        created = self._admin(
            "POST",
            "/v3/users",
            {"user": {"name": name, "password": password, "domain_id": "default"}},
        )
        user_id = str(created["user"]["id"])
        for role in roles:
            self._admin("PUT", f"/v3/projects/{project_id}/users/{user_id}/roles/{self.role(role)}")
        return user_id

    def revoke(self, token: str) -> None:
        code, _, body = self.call(
            "DELETE", "/v3/auth/tokens", token=self.admin_token(),
            headers={"X-Subject-Token": token},
        )
        assert code == 204, (code, body)
