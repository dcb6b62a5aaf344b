"""
OpenStack Swift "all in one" on 127.0.0.1 for the object-store tests, with its S3 API.

PyPI's ``swift`` goes into its own virtualenv (``.venv-swift``, from
``swift-requirements.txt``), so nothing is written outside a temporary directory and Debian's
Python is never involved.  One replica, one device (a plain directory), rings built in one
Python process; memcached (Debian's, for tempauth's tokens), the account, container and
object servers, and a proxy whose pipeline has tempauth, s3api and SLO, each its own process
group.  Ready means a tempauth token is issued and the account answers.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .servers import ensure_venv, free_port

ACCOUNT, USER, KEY = "test", "tester", "testing"


_SERVER = """[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
user = {user}
swift_dir = {etc}
devices = {devices}
mount_check = false
disable_fallocate = true
log_level = WARNING

[pipeline:main]
pipeline = healthcheck {kind}-server

[app:{kind}-server]
use = egg:swift#{kind}

[filter:healthcheck]
use = egg:swift#healthcheck
"""

_PROXY = """[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 1
user = {user}
swift_dir = {etc}
log_level = WARNING

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk s3api
    tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:tempauth]
use = egg:swift#tempauth
user_{account}_{user_name} = {key} .admin
token_life = 86400

[filter:s3api]
use = egg:swift#s3api
location = us-east-1
s3_acl = false
min_segment_size = 5242880
max_upload_part_num = 10000

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{memcache}

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
max_manifest_segments = 10000
min_segment_size = 1
[filter:dlo]
use = egg:swift#dlo
"""

_RINGS = """
import sys
from swift.common.ring import RingBuilder
etc = sys.argv[1]
for kind, port in zip(("account", "container", "object"), map(int, sys.argv[2:5])):
    builder = RingBuilder(6, 1, 1)
    builder.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": port,
                     "device": "d1", "weight": 1.0, "meta": ""})
    builder.rebalance()
    builder.get_ring().save(f"{etc}/{kind}.ring.gz")
"""


class Swift:
    """One Swift cluster; ``auth_url``, ``user``, ``key`` and ``s3_endpoint`` reach it."""

    def __init__(self) -> None:
        self.venv = ensure_venv("swift")
        if shutil.which("memcached") is None:
            raise RuntimeError("memcached is missing: apt-get install memcached (./dev test does)")
        self.root = Path(tempfile.mkdtemp(prefix="imaged-swift-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth_url = self.url + "/auth/v1.0"
        self.user, self.key = f"{ACCOUNT}:{USER}", KEY
        self.processes: list[subprocess.Popen[bytes]] = []

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["PYTHONNOUSERSITE"] = "1"
        return env

    def _spawn(self, name: str, *command: str) -> None:
        log = open(self.root / f"{name}.log", "ab")
        self.processes.append(subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=self._env(),
            start_new_session=True, cwd=self.root,
        ))

    def start(self, timeout: float = 90) -> Swift:
        etc, devices = self.root / "etc", self.root / "node"
        etc.mkdir()
        (devices / "d1").mkdir(parents=True)
        (etc / "swift.conf").write_text(
            "[swift-hash]\nswift_hash_path_suffix = imaged-tests\n"
            "swift_hash_path_prefix = imaged-tests\n"
            "[storage-policy:0]\nname = Policy-0\ndefault = yes\n"
        )
        user = os.environ.get("USER") or subprocess.run(
            ["id", "-un"], capture_output=True, text=True).stdout.strip()
        ports = {kind: free_port() for kind in ("account", "container", "object")}
        memcache = free_port()
        for kind, port in ports.items():
            (etc / f"{kind}-server.conf").write_text(_SERVER.format(
                port=port, user=user, etc=etc, devices=devices, kind=kind))
        (etc / "proxy-server.conf").write_text(_PROXY.format(
            port=self.port, user=user, etc=etc, account=ACCOUNT, user_name=USER, key=KEY,
            memcache=memcache))
        python = str(self.venv / "bin" / "python")
        subprocess.run([python, "-c", _RINGS, str(etc), *map(str, ports.values())],
                       check=True, env=self._env(), capture_output=True)
        memcache_user = ["-u", "memcache"] if os.getuid() == 0 else []
        self._spawn("memcached", "memcached", "-l", "127.0.0.1", "-p", str(memcache), "-U", "0",
                    "-m", "64", *memcache_user)
        for kind in ports:
            self._spawn(kind, str(self.venv / "bin" / f"swift-{kind}-server"),
                        str(etc / f"{kind}-server.conf"))
        self._spawn("proxy", str(self.venv / "bin" / "swift-proxy-server"),
                    str(etc / "proxy-server.conf"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                break
            try:
                self.token()
                return self
            except (OSError, urllib.error.URLError, KeyError):
                time.sleep(0.2)
        logs = "\n".join(p.read_text()[-1500:] for p in self.root.glob("*.log"))
        self.stop()
        raise RuntimeError("Swift did not start:\n" + logs)

    def token(self) -> tuple[str, str]:
        """A tempauth token and the storage URL; creates the account on first use."""
        request = urllib.request.Request(
            self.auth_url, headers={"X-Auth-User": self.user, "X-Auth-Key": self.key})
        with urllib.request.urlopen(request, timeout=10) as reply:
            token, storage = reply.headers["X-Auth-Token"], reply.headers["X-Storage-Url"]
        if token is None or storage is None:
            raise KeyError("no token yet")
        head = urllib.request.Request(storage, method="POST", headers={"X-Auth-Token": token})
        with urllib.request.urlopen(head, timeout=10):
            pass
        return token, storage

    def stop(self) -> None:
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        self.processes = []
        shutil.rmtree(self.root, ignore_errors=True)
