"""
Running imaged as a system service: listening on every kind of Twisted endpoint (tcp, ssl,
unix, systemd socket activation), telling systemd READY/STOPPING, and stopping gracefully
with uploads in progress.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imaged.testing import TWISTD, TwistdDaemon

pytestmark = pytest.mark.servers  # starts twistd and other real servers

LISTENING = re.compile(r"imaged listening on (\S+)")


class Twistd:
    """``twistd -n imaged`` with exactly the arguments given (no --listen added)."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str] | None = None,
                 pass_fds: tuple[int, ...] = (), preexec: Any = None,
                 command: list[str] | None = None) -> None:
        self.log_path = workdir / "twistd.log"
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            command or [TWISTD, "-n", "--pidfile=", "imaged", "--data-dir", str(workdir),
                        *args],
            cwd=workdir, stdout=log, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **(env or {})}, pass_fds=pass_fds)

    def wait_listening(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = LISTENING.findall(self.log_path.read_text())
            if found:
                return found[-1]
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("imaged did not start:\n" + self.log_path.read_text())

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def curl(*args: str) -> tuple[int, bytes]:
    result = subprocess.run(["curl", "-sS", "--max-time", "30", "-w", "\n%{http_code}", *args],
                            capture_output=True, check=True)
    body, _, code = result.stdout.rpartition(b"\n")
    return int(code), body


def test_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "imaged.sock"
    daemon = Twistd(tmp_path, ["--listen", f"unix:{path}"])
    try:
        daemon.wait_listening()
        code, body = curl("--unix-socket", str(path), "http://imaged/versions")
        assert code == 200 and json.loads(body)["versions"]
    finally:
        assert daemon.stop() in (0, -signal.SIGTERM)


def test_tls_with_a_self_signed_certificate(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    port = _free_port()
    daemon = Twistd(tmp_path, ["--listen", f"ssl:{port}:interface=127.0.0.1:"
                                           f"privateKey={key}:certKey={cert}"])
    try:
        daemon.wait_listening()
        code, body = curl("--cacert", str(cert), "--resolve", f"localhost:{port}:127.0.0.1",
                          f"https://localhost:{port}/v2/images")
        assert code == 200 and json.loads(body)["images"] == []
        # Links are built for the scheme the client used.
        code, body = curl("--cacert", str(cert), "--resolve", f"localhost:{port}:127.0.0.1",
                          "-X", "POST", "-H", "Content-Type: application/json", "-d", "{}",
                          "-D", "-", f"https://localhost:{port}/v2/images")
        assert code == 201 and f"location: https://localhost:{port}/v2/images/".encode() in \
            body.lower()
        # Plain HTTP on the TLS port is not served.
        with pytest.raises(subprocess.CalledProcessError):
            curl(f"http://127.0.0.1:{port}/versions")
    finally:
        daemon.stop()


def test_systemd_socket_activation(tmp_path: Path) -> None:
    """What systemd does for imaged.socket: a listening socket as fd 3, LISTEN_FDS=1."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    os.set_inheritable(listener.fileno(), True)
    fd = listener.fileno()
    # LISTEN_PID must be twistd's own pid: set it in the child just before exec.
    # systemd (>= 227) names the descriptors too; Twisted wants both.
    launcher = (
        f"import os, sys; os.dup2({fd}, 3); os.environ['LISTEN_PID'] = str(os.getpid()); "
        "os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_FDNAMES'] = 'imaged.socket'; "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    daemon = Twistd(tmp_path, [], pass_fds=(fd,), command=[
        sys.executable, "-c", launcher, TWISTD, "-n", "--pidfile=", "imaged",
        "--data-dir", str(tmp_path), "--listen", "systemd:domain=INET:index=0"])
    listener.close()  # imaged holds it now
    try:
        daemon.wait_listening()
        assert curl(f"http://127.0.0.1:{port}/versions")[0] == 200
    finally:
        daemon.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(30)
    yield sock, path
    sock.close()


def test_notifies_systemd_ready_then_stopping(tmp_path: Path, notify_socket: Any) -> None:
    sock, path = notify_socket
    daemon = TwistdDaemon(str(tmp_path), args=["--data-dir", str(tmp_path)],
                          env={"NOTIFY_SOCKET": path}).start()
    try:
        assert sock.recv(1024) == b"READY=1"
        assert curl(f"{daemon.url}/versions")[0] == 200
    finally:
        daemon.stop()
    assert sock.recv(1024) == b"STOPPING=1"


def test_notifies_an_abstract_socket(tmp_path: Path) -> None:
    name = f"imaged-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(30)
    try:
        daemon = TwistdDaemon(str(tmp_path), args=["--data-dir", str(tmp_path)],
                              env={"NOTIFY_SOCKET": "@" + name}).start()
        try:
            assert sock.recv(1024) == b"READY=1"
        finally:
            daemon.stop()
        assert sock.recv(1024) == b"STOPPING=1"
    finally:
        sock.close()


def _slow_upload(url: str, image_id: str, chunks: int, pause: float) -> subprocess.Popen[bytes]:
    """curl sending a chunked body from a pipe, a chunk every ``pause`` seconds."""
    feeder = (
        "import sys, time\n"
        f"for _ in range({chunks}):\n"
        "    sys.stdout.buffer.write(b'x' * 65536); sys.stdout.flush()\n"
        f"    time.sleep({pause})\n"
    )
    source = subprocess.Popen([sys.executable, "-c", feeder], stdout=subprocess.PIPE)
    upload = subprocess.Popen(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T", "-", "-H",
         "Content-Type: application/octet-stream", f"{url}/v2/images/{image_id}/file"],
        stdin=source.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert source.stdout is not None
    source.stdout.close()
    return upload


def _create(url: str) -> str:
    code, body = curl("-X", "POST", "-H", "Content-Type: application/json", "-d",
                      '{"disk_format": "raw", "container_format": "bare"}', f"{url}/v2/images")
    assert code == 201
    return str(json.loads(body)["id"])


def _status(url: str, image_id: str) -> dict[str, Any]:
    return dict(json.loads(curl(f"{url}/v2/images/{image_id}")[1]))


def _receiving(url: str, image_id: str, timeout: float = 30) -> None:
    """Wait (on a condition, not for time) until the daemon is receiving the upload."""
    deadline = time.monotonic() + timeout
    while _status(url, image_id)["status"] != "saving":
        assert time.monotonic() < deadline, "the upload never started"
        time.sleep(0.05)


def test_stopping_lets_a_short_upload_finish(tmp_path: Path) -> None:
    daemon = TwistdDaemon(str(tmp_path), args=["--data-dir", str(tmp_path),
                                               "--shutdown-timeout", "20"]).start()
    image_id = _create(daemon.url)
    upload = _slow_upload(daemon.url, image_id, chunks=20, pause=0.1)  # about 2 s
    _receiving(daemon.url, image_id)
    daemon.stop()  # SIGTERM while the body is still arriving
    out, err = upload.communicate(timeout=60)
    assert out == b"204", err
    again = TwistdDaemon(str(tmp_path), args=["--data-dir", str(tmp_path)]).start()
    try:
        shown = _status(again.url, image_id)
        assert shown["status"] == "active" and shown["size"] == 20 * 65536
    finally:
        again.stop()


def test_stopping_aborts_an_upload_that_outlasts_the_timeout(tmp_path: Path) -> None:
    daemon = TwistdDaemon(str(tmp_path), args=["--data-dir", str(tmp_path),
                                               "--shutdown-timeout", "1"]).start()
    image_id = _create(daemon.url)
    upload = _slow_upload(daemon.url, image_id, chunks=200, pause=0.1)  # about 20 s
    _receiving(daemon.url, image_id)
    started = time.monotonic()
    daemon.stop()
    assert time.monotonic() - started < 15
    upload.kill()
    upload.communicate()
    assert "aborting an unfinished upload at shutdown" in daemon.log()
    again = TwistdDaemon(str(tmp_path), args=["--data-dir", str(tmp_path)]).start()
    try:
        shown = _status(again.url, image_id)
        assert shown["status"] == "queued" and shown["size"] is None
        assert [p for p in (tmp_path / "images").rglob("*") if p.is_file()] == []
    finally:
        again.stop()


def test_json_access_log_and_prometheus_metrics(tmp_path: Path) -> None:
    daemon = Twistd(tmp_path, [], command=[
        TWISTD, "-n", "--pidfile=", "--logger", "imaged.logs.json_observer", "imaged",
        "--data-dir", str(tmp_path), "--listen", "tcp:0:interface=127.0.0.1",
        "--metrics-listen", "tcp:0:interface=127.0.0.1"])
    try:
        ports: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while len(ports) < 2 and time.monotonic() < deadline:
            for line in daemon.log_path.read_text().splitlines():
                if line.startswith("{") and "imaged listening on" in line:
                    event = json.loads(line)  # JSON lines: the fields, not the text
                    kind = "metrics" if "(metrics)" in event["description"] else "api"
                    ports[kind] = event["address"].rsplit(":", 1)[1]
            time.sleep(0.05)
        metrics_port, api_port = ports["metrics"], ports["api"]
        api = f"http://127.0.0.1:{api_port}"
        request_id = f"req-{os.getpid()}-{time.monotonic_ns()}"
        code, body = curl("-X", "POST", "-H", "Content-Type: application/json", "-H",
                          f"X-Openstack-Request-Id: {request_id}", "-d",
                          '{"disk_format": "raw", "container_format": "bare"}', f"{api}/v2/images")
        assert code == 201
        image_id = json.loads(body)["id"]
        assert curl("-X", "PUT", "-H", "Content-Type: application/octet-stream",
                    "--data-binary", "x" * 5000, f"{api}/v2/images/{image_id}/file")[0] == 204
        assert curl(f"{api}/v2/images/{image_id}/file")[0] == 200
        code, body = curl(f"{api}/metrics")  # never on the API's port (Glance: 300 there)
        assert code == 300 and b"imaged_http" not in body

        code, scraped = curl(f"http://127.0.0.1:{metrics_port}/metrics")
        assert code == 200
        page = scraped.decode()
        assert ('imaged_http_requests_total{code="201",method="POST",route="/v2/images"} 1.0'
                in page)
        assert ('imaged_http_requests_total{code="204",method="PUT",'
                'route="/v2/images/{image_id}/file"} 1.0' in page)
        assert "imaged_uploads_in_progress 0.0" in page
        received = float(re.search(r"^imaged_http_received_bytes_total (\S+)$", page,
                                   re.M).group(1))  # type: ignore[union-attr]
        assert received >= 5000
        # Each database transaction under the name of what it did.
        counts = dict(re.findall(
            r'^imaged_db_transaction_seconds_count\{transaction="(\w+)"\} (\S+)$', page, re.M))
        assert float(counts["create_image"]) == 1.0
        assert float(counts["start_upload"]) == 1.0 and float(counts["finish_upload"]) == 1.0
        assert float(counts["get_image"]) >= 1.0
    finally:
        daemon.stop()
    events = [json.loads(line) for line in daemon.log_path.read_text().splitlines()
              if line.startswith("{")]
    assert events, "no JSON lines"
    access = [e for e in events if e.get("log_namespace") == "imaged.access"]
    mine = [e for e in access if e.get("request_id") == request_id]
    assert len(mine) == 1
    assert (mine[0]["method"], mine[0]["path"], mine[0]["code"]) == ("POST", "/v2/images", 201)
    assert mine[0]["duration_ms"] >= 0 and mine[0]["user_agent"].startswith("curl/")
    upload = [e for e in access if e["method"] == "PUT"]
    assert len(upload) == 1 and upload[0]["received"] == 5000
    assert all(e["request_id"].startswith("req-") for e in access)
    # The service's own events carry the request id too, and so can be joined with access.
    created = [e for e in events if (e.get("log_format") or "").startswith("created image")]
    assert [e["request_id"] for e in created] == [request_id]
    received = [e for e in events if (e.get("log_format") or "").startswith("receiving data")]
    assert len(received) == 1 and received[0]["request_id"] == upload[0]["request_id"]


def test_log_format_json_from_the_configuration(tmp_path: Path) -> None:
    config = tmp_path / "imaged.conf"
    config.write_text('log-format = "json"\nlisten = "tcp:0:interface=127.0.0.1"\n')
    daemon = Twistd(tmp_path, ["--config", str(config)])
    try:
        deadline = time.monotonic() + 30
        while "imaged listening on" not in daemon.log_path.read_text():
            assert time.monotonic() < deadline and daemon.process.poll() is None
            time.sleep(0.05)
        listening = next(json.loads(line) for line in daemon.log_path.read_text().splitlines()
                         if "imaged listening on" in line)
        # Serving (the reactor runs and handles SIGTERM) before it is stopped.
        assert curl(f"http://{listening['address']}/healthcheck")[0] == 200
    finally:
        daemon.stop()
    lines = [line for line in daemon.log_path.read_text().splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(e.get("log_namespace") == "imaged.daemon" for e in events)
    assert any("Server Shut Down" in json.dumps(e) for e in events)
