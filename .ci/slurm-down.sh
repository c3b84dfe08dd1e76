#!/usr/bin/env bash
# Stops the cluster .ci/slurm-up.sh started in DIR (default
# /tmp/autoresearch-slurm), each daemon by the pid in its pid file:
# slurmd, slurmctld, then munged. Waits up to 10 s for each, then kills it.
set -uo pipefail
dir=${1:-/tmp/autoresearch-slurm}
status=0
for daemon in slurmd slurmctld munged; do
    pidfile="$dir/$daemon.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "slurm-down: $daemon ($pid) still alive after 10 s, killing it" >&2
            kill -KILL "$pid" || status=1
        fi
    fi
    rm -f "$pidfile"
done
exit $status
