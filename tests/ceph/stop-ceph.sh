#!/usr/bin/env bash
# stop-ceph.sh DIR [--keep-data]: stop what start-ceph.sh DIR started, then delete DIR.
#
# Adapted from shared/reference/backend-recipes/ceph/stop-ceph.sh.  Only the PIDs in
# DIR/run/*.pid are signalled, and only while /proc/PID/cmdline still names a ceph daemon of
# DIR/ceph.conf (a recycled PID is never hit): SIGTERM to the OSD first, then the mon (all at
# once makes them wait on each other for seconds), SIGKILL after CEPH_STOP_WAIT [10] seconds.
# Safe to run twice.
set -uo pipefail
DIR=${1:?usage: stop-ceph.sh DIR [--keep-data]}
keep=0; [ "${2:-}" = "--keep-data" ] && keep=1
WAIT=${CEPH_STOP_WAIT:-10}
[ -d "$DIR" ] || exit 0
DIR=$(cd "$DIR" && pwd)

ours() {
    local cmd
    cmd=$( { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null ) || return 1
    case $cmd in *ceph-*" $DIR/ceph.conf "*) return 0;; *) return 1;; esac
}
stop_stage() {  # stop_stage GLOB: TERM the matching daemons, wait, KILL what is left
    local f pid pids=()
    for f in "$DIR"/run/$1.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        if [ -n "$pid" ] && ours "$pid"; then kill -TERM "$pid" 2>/dev/null && pids+=("$pid"); fi
    done
    for _ in $(seq $((WAIT * 20))); do
        local alive=0
        for pid in "${pids[@]}"; do ours "$pid" && alive=1; done
        [ $alive = 0 ] && return 0
        sleep 0.05
    done
    for pid in "${pids[@]}"; do ours "$pid" && kill -KILL "$pid" 2>/dev/null; done
    return 0
}
stop_stage 'osd.*'
stop_stage 'mon.*'
rm -f "$DIR"/run/*.pid
if [ $keep = 0 ] && [ -f "$DIR/.start-ceph" ]; then rm -rf "$DIR"; fi
