"""
A throwaway one-node Ceph on 127.0.0.1 for the RBD store's tests.

``tests/ceph/start-ceph.sh`` (on Debian's ceph-mon, ceph-osd and ceph-common, which
``./dev test`` installs) runs one monitor and one memstore OSD in a temporary directory, with
pool ``images`` (application rbd) and ``client.imaged`` (caps ``profile rbd``) as imaged would
use them; ``stop-ceph.sh`` stops them by PID and removes the directory, at the fixture's end or
at exit if the session dies first.  Ceph's Python bindings are not on PyPI: when ``import rbd``
fails in the running virtualenv, Debian's python3-rados and python3-rbd are linked into it
(``tests/ceph/venv-link-ceph.sh``).
"""

from __future__ import annotations

import atexit
import importlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from .servers import free_port

SCRIPTS = Path(__file__).parent / "ceph"


def link_bindings() -> None:
    """Make ``import rados, rbd`` work in this interpreter's virtualenv (``sys.prefix``)."""
    try:
        import rbd
    except ImportError:
        link = subprocess.run(
            ["bash", str(SCRIPTS / "venv-link-ceph.sh"), sys.prefix],
            capture_output=True, text=True,
        )
        if link.returncode != 0:
            raise RuntimeError("cannot link Ceph's Python bindings: " + link.stderr) from None
        importlib.invalidate_caches()
        import rbd  # noqa: F401


@attrs.frozen
class CephCluster:
    """A running cluster: what imaged's RBD store needs to reach it, and admin helpers."""

    dir: Path
    conf: str
    keyring: str
    admin_keyring: str
    user: str
    pool: str
    fsid: str
    mon_host: str

    def store_table(self, name: str, chunk_mib: int, weight: int) -> str:
        """imaged's ``[stores.<name>]`` table for this cluster's pool (TOML)."""
        return (f'[stores.{name}]\ntype = "rbd"\ndescription = "Ceph RBD"\n'
                f'pool = "{self.pool}"\nuser = "{self.user}"\nconf = "{self.conf}"\n'
                f"chunk-size = {chunk_mib}\nweight = {weight}\n")

    @contextmanager
    def admin(self) -> Iterator[Any]:
        """An ``Ioctx`` on the pool as client.admin (as Nova or an operator would act)."""
        import rados

        cluster = rados.Rados(conffile=self.conf, rados_id="admin")
        cluster.connect()
        try:
            ioctx = cluster.open_ioctx(self.pool)
            try:
                yield ioctx
            finally:
                ioctx.close()
        finally:
            cluster.shutdown()

    def rbd(self, *args: str) -> str:
        """The ``rbd`` command line as client.admin; its output."""
        done = subprocess.run(["rbd", "-c", self.conf, "--id", "admin", *args],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"rbd {shlex.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def images(self) -> list[str]:
        """``rbd ls`` of the pool."""
        return sorted(self.rbd("ls", self.pool).split())

    def empty_pool(self) -> None:
        """Remove every image of the pool, clones first, whatever their snapshots."""
        import rbd

        with self.admin() as ioctx:
            for _ in range(10):
                names = rbd.RBD().list(ioctx)
                if not names:
                    return
                for name in names:
                    try:
                        with rbd.Image(ioctx, name) as image:
                            for snap in list(image.list_snaps()):
                                if image.is_protected_snap(snap["name"]):
                                    image.unprotect_snap(snap["name"])
                                image.remove_snap(snap["name"])
                        rbd.RBD().remove(ioctx, name)
                    except (rbd.ImageBusy, rbd.ImageHasSnapshots, rbd.ImageNotFound):
                        pass  # a parent of clones: next round, once they are gone
        raise RuntimeError(f"cannot empty pool {self.pool}: {self.images()}")


class Ceph:
    """Starts and stops one cluster (``start()`` returns its ``CephCluster``)."""

    def __init__(self, objectstore: str = "memstore") -> None:
        missing = [c for c in ("ceph-mon", "ceph-osd", "ceph", "rbd") if shutil.which(c) is None]
        if missing:
            raise RuntimeError(
                f"Ceph is missing ({', '.join(missing)}): apt-get install ceph-mon ceph-osd "
                "ceph-common python3-rados python3-rbd (./dev test does)"
            )
        link_bindings()
        self.objectstore = objectstore
        self.root = Path(tempfile.mkdtemp(prefix="imaged-ceph-"))

    def start(self) -> CephCluster:
        env = dict(os.environ, CEPH_OBJECTSTORE=self.objectstore,
                   CEPH_MON_PORT=str(free_port()))
        atexit.register(self.stop)
        started = subprocess.run(["bash", str(SCRIPTS / "start-ceph.sh"), str(self.root)],
                                 capture_output=True, text=True, env=env)
        if started.returncode != 0:
            self.stop()
            raise RuntimeError("Ceph did not start:\n" + started.stderr[-5000:])
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in started.stdout.splitlines() if line.startswith("export ")
        )
        values = {key: shlex.split(value)[0] for key, value in exports.items()}
        return CephCluster(
            dir=self.root,
            conf=values["CEPH_CONF"],
            keyring=values["CEPH_KEYRING"],
            admin_keyring=str(self.root / "admin.keyring"),
            user=values["CEPH_USER"],
            pool=values["CEPH_POOL"],
            fsid=values["CEPH_FSID"],
            mon_host=values["CEPH_MON_HOST"],
        )

    def stop(self) -> None:
        if self.root.exists():
            subprocess.run(["bash", str(SCRIPTS / "stop-ceph.sh"), str(self.root)],
                           capture_output=True)
            shutil.rmtree(self.root, ignore_errors=True)
