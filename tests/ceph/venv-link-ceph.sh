#!/usr/bin/env bash
# venv-link-ceph.sh VENV: make Debian's python3-rados and python3-rbd importable in VENV.
#
# Adapted from shared/reference/backend-recipes/ceph/venv-link-ceph.sh.  Neither binding is on
# PyPI; Debian's are one C extension each (linked against librados2 and librbd1), so a symlink
# of each into the venv's site-packages is enough when the venv's Python has the same SOABI
# (any CPython 3.11 here), and nothing else of /usr/lib/python3/dist-packages leaks in.
# Idempotent.
set -euo pipefail
VENV=${1:?usage: venv-link-ceph.sh VENV}
PY=$VENV/bin/python
SYS=/usr/lib/python3/dist-packages
[ -x "$PY" ] || { echo "venv-link-ceph: $PY not found" >&2; exit 1; }
read -r SOABI SITE < <("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("SOABI"), sysconfig.get_paths()["platlib"])')
for mod in rados rbd; do
    so=$SYS/$mod.$SOABI.so
    if [ ! -e "$so" ]; then
        echo "venv-link-ceph: $so missing: apt-get install python3-rados python3-rbd (for $SOABI)" >&2
        exit 1
    fi
    ln -sfn "$so" "$SITE/$(basename "$so")"
done
"$PY" -c 'import rados, rbd'
