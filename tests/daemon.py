"""Starting imaged the way users do (twistd), on a free loopback port, for real-socket tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
_LISTENING = re.compile(r"imaged listening on .* \(127\.0\.0\.1:(\d+)\)")


class Daemon:
    """A ``twistd -n`` process; ``url`` is where it listens once ``start`` returns."""

    def __init__(self, workdir: str, args: Sequence[str] = (), tac: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.args = list(args)
        self.tac = tac
        self.env = env
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.log_path = os.path.join(workdir, "twistd.log")

    def start(self, timeout: float = 30) -> Daemon:
        listen = ["--listen", "tcp:0:interface=127.0.0.1"]
        if self.tac:
            command = [TWISTD, "-n", "--pidfile=", "-y", self.tac]
            env = dict(os.environ, IMAGED_ARGS=" ".join(listen + self.args), **(self.env or {}))
        else:
            command = [TWISTD, "-n", "--pidfile=", "imaged", *listen, *self.args]
            env = dict(os.environ, **(self.env or {}))
        log = open(self.log_path, "a")
        offset = log.tell()
        self.process = subprocess.Popen(command, cwd=self.workdir, stdout=log,
                                        stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path) as f:
                f.seek(offset)
                found = _LISTENING.findall(f.read())
            if found:
                self.url = f"http://127.0.0.1:{found[-1]}"
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("imaged did not start:\n" + self.log())

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self.process = None
        return code
