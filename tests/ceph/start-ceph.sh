#!/usr/bin/env bash
# start-ceph.sh DIR: a throwaway one-node Ceph (Debian 12's 16.2 "pacific") for imaged's RBD tests.
#
# Adapted from shared/reference/backend-recipes/ceph/start-ceph.sh (trimmed: no mgr, which RBD
# does not need; no package install, which ./dev test does).  One mon and one OSD on 127.0.0.1,
# every byte of state under DIR, nothing in /etc/ceph or systemd.  Daemons run in the
# foreground (-f) in sessions of their own; their PIDs go to DIR/run/<name>.pid, which is all
# stop-ceph.sh kills.  Makes pool $CEPH_POOL (application rbd) and client.$CEPH_CLIENT with
# `mon 'profile rbd' osd 'profile rbd pool=$CEPH_POOL'`, and writes DIR/ceph.conf,
# DIR/keyring (that client), DIR/admin.keyring (client.admin; ceph.conf maps each name to its
# keyring) and DIR/env.  stdout carries only the `export` lines of DIR/env.
#
# Environment: CEPH_OBJECTSTORE (memstore | bluestore on a sparse file DIR/osd/0/block),
# CEPH_OSD_GB [8], CEPH_POOL [images], CEPH_CLIENT [imaged], CEPH_PG_NUM [8],
# CEPH_MON_PORT [a free port], CEPH_WAIT [60 s per readiness step].
set -euo pipefail

DIR=${1:?usage: start-ceph.sh DIR}
OBJECTSTORE=${CEPH_OBJECTSTORE:-memstore}
OSD_GB=${CEPH_OSD_GB:-8}
POOL=${CEPH_POOL:-images}
CLIENT=${CEPH_CLIENT:-imaged}
PG_NUM=${CEPH_PG_NUM:-8}
WAIT=${CEPH_WAIT:-60}
HERE=$(cd "$(dirname "$0")" && pwd)

STARTED=0
die() {  # stop what this run started (by PID) and keep DIR, with its logs, for a look
    echo "[start-ceph] ERROR: $*" >&2
    if [ "$STARTED" = 1 ]; then
        for f in "$DIR"/log/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -15 "$f" >&2; }; done
        bash "$HERE/stop-ceph.sh" "$DIR" --keep-data || true
    fi
    exit 1
}
case $OBJECTSTORE in memstore|bluestore) ;; *) die "CEPH_OBJECTSTORE must be memstore or bluestore";; esac
for b in ceph-mon ceph-osd ceph rados ceph-authtool monmaptool; do
    command -v "$b" >/dev/null || die "$b is missing: apt-get install ceph-mon ceph-osd ceph-common (./dev test does)"
done

mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd)
if [ -n "$(ls -A "$DIR")" ]; then
    [ -f "$DIR/.start-ceph" ] || die "$DIR is not empty and was not made by start-ceph.sh"
    for f in "$DIR"/run/*.pid; do
        [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && die "a daemon of $DIR still runs; stop-ceph.sh it first"
    done
    rm -rf "${DIR:?}"/* "${DIR:?}"/.start-ceph
fi
touch "$DIR/.start-ceph"
mkdir -p "$DIR"/{run,log,crash,mon/a,osd/0}

MON_PORT=${CEPH_MON_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
FSID=$(python3 -c 'import uuid; print(uuid.uuid4())')
CONF=$DIR/ceph.conf

# $name, $id and $pid are Ceph's metavariables (escaped from bash).  The recipe's README says why
# each setting is there: one OSD must make a healthy pool of size 1, and paxos rounds of 0.1 s
# instead of 1 s halve the start.
cat >"$CONF" <<CONF
# written by start-ceph.sh: a throwaway test cluster, not for production
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MON_PORT]
public addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
crash dir = $DIR/crash
log to stderr = false
err to stderr = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
osd objectstore = $OBJECTSTORE

[mon]
mon data = $DIR/mon/\$id
paxos propose interval = 0.1
paxos min wait = 0.01
mon cluster log file = $DIR/log/cluster.log

[osd]
osd data = $DIR/osd/\$id
memstore device bytes = $((OSD_GB * 1024 * 1024 * 1024))
bluestore block create = true
bluestore block size = $((OSD_GB * 1024 * 1024 * 1024))
bluestore fsck on mount = false
osd memory target = 1073741824
bdev enable discard = false
osd op num shards = 2
osd op num threads per shard = 1

[client]
keyring = $DIR/keyring
# one admin socket per client process; client errors to DIR/log, not the tests' stderr
admin socket = $DIR/run/\$name.\$pid.asok
err to stderr = false

[client.admin]
keyring = $DIR/admin.keyring
CONF

ceph-authtool --create-keyring "$DIR/admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
ceph-authtool --create-keyring "$DIR/mon/bootstrap.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$DIR/mon/bootstrap.keyring" --import-keyring "$DIR/admin.keyring" >/dev/null
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/mon/monmap" >/dev/null
ceph-mon -c "$CONF" -i a --mkfs --monmap "$DIR/mon/monmap" --keyring "$DIR/mon/bootstrap.keyring" \
    2>>"$DIR/log/mkfs.log" || die "ceph-mon --mkfs failed: $(tail -3 "$DIR/log/mkfs.log")"

start_daemon() {  # start_daemon NAME COMMAND...: in the foreground of a session of its own
    local name=$1; shift
    STARTED=1
    setsid "$@" -c "$CONF" -f </dev/null >>"$DIR/log/$name.out" 2>&1 &
    echo $! >"$DIR/run/$name.pid"
}
alive() { kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null; }
ADMIN=(-c "$CONF" -n client.admin --connect-timeout 10)
wait_for() {  # wait_for WHAT DAEMON COMMAND...: until COMMAND succeeds, WAIT seconds at most
    local what=$1 daemon=$2; shift 2
    for _ in $(seq $((WAIT * 5))); do
        alive "$daemon" || die "$daemon exited"
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$what not ready within ${WAIT}s"
}

start_daemon mon.a ceph-mon -i a
wait_for "mon" mon.a timeout 10 ceph "${ADMIN[@]}" mon stat

OSD_UUID=$(python3 -c 'import uuid; print(uuid.uuid4())')
OSD_KEY=$(ceph-authtool --gen-print-key)
printf '[osd.0]\n\tkey = %s\n' "$OSD_KEY" >"$DIR/osd/0/keyring"
printf '{"cephx_secret": "%s"}\n' "$OSD_KEY" >"$DIR/osd/0/new.json"
osd_id=$(ceph "${ADMIN[@]}" osd new "$OSD_UUID" -i "$DIR/osd/0/new.json" 2>/dev/null)
rm -f "$DIR/osd/0/new.json"
[ "$osd_id" = 0 ] || die "ceph osd new returned '$osd_id', not 0"
ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$OSD_UUID" >>"$DIR/log/mkfs.log" 2>&1 || die "ceph-osd --mkfs failed"
start_daemon osd.0 ceph-osd -i 0

ceph "${ADMIN[@]}" osd pool create "$POOL" "$PG_NUM" "$PG_NUM" >/dev/null 2>&1 || die "pool create failed"
ceph "${ADMIN[@]}" osd pool application enable "$POOL" rbd >/dev/null 2>&1 || die "application enable failed"
ceph "${ADMIN[@]}" auth get-or-create "client.$CLIENT" mon 'profile rbd' osd "profile rbd pool=$POOL" \
    -o "$DIR/keyring" >/dev/null 2>&1 || die "auth get-or-create client.$CLIENT failed"

# Ready means the application's user can write to the pool (its PGs are active), not HEALTH_OK.
wait_for "pool $POOL" osd.0 timeout 5 rados -c "$CONF" --id "$CLIENT" -p "$POOL" put start-ceph-probe "$CONF"
rados -c "$CONF" --id "$CLIENT" -p "$POOL" rm start-ceph-probe 2>/dev/null || true

cat >"$DIR/env" <<ENV
export CEPH_DIR='$DIR'
export CEPH_CONF='$CONF'
export CEPH_KEYRING='$DIR/keyring'
export CEPH_USER='$CLIENT'
export CEPH_POOL='$POOL'
export CEPH_FSID='$FSID'
export CEPH_MON_HOST='v2:127.0.0.1:$MON_PORT'
ENV
cat "$DIR/env"
