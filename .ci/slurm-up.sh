#!/usr/bin/env bash
# Starts a single-node Slurm cluster on loopback for the tests (issue #18):
# munged, slurmctld and slurmd, all as this user (root in CI), every file
# under DIR (default /tmp/autoresearch-slurm), every daemon's pid in
# DIR/*.pid for .ci/slurm-down.sh. Installs the Debian packages slurm-wlm
# and munge when missing. Prints the path of the cluster's slurm.conf last;
# clients reach the cluster with SLURM_CONF set to it. Fails (non-zero) if
# the node is not idle within a minute.
set -euo pipefail
dir=${1:-/tmp/autoresearch-slurm}

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# A cluster of an earlier run in the same directory goes first.
"$(dirname "$0")/slurm-down.sh" "$dir" >/dev/null 2>&1 || true
rm -rf "$dir"
mkdir -p "$dir"/{state,spool,log,munge}
chmod 700 "$dir/munge"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
ctld_port=$(free_port)
slurmd_port=$(free_port)
while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done

host=$(hostname -s)
cpus=$(nproc)
# What slurmd finds on this machine, less a margin (a node claiming more
# memory than it has is drained).
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)

# munged with a key, socket and pid of its own: a system munged, if any,
# is left alone.
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
chmod 400 "$dir/munge/munge.key"
munged --force \
    --key-file="$dir/munge/munge.key" \
    --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munged.pid" \
    --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munge.seed" \
    </dev/null >>"$dir/log/start.log" 2>&1

cat >"$dir/slurm.conf" <<CONF
# Written by .ci/slurm-up.sh: one node on loopback, no accounting.
ClusterName=autoresearch
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=$(id -un)
SlurmdUser=$(id -un)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
# Cores and memory are consumed, each core by up to 8 jobs at once (the
# partition's OverSubscribe): parallel sleeping jobs run together on a
# small machine.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MailProg=/bin/true
DefMemPerNode=64
SchedulerType=sched/builtin
# Pending jobs are looked at every second, not every minute.
SchedulerParameters=sched_interval=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
# Short timeouts: a test cluster answers at once or not at all.
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
InactiveLimit=0
KillWait=2
OverTimeLimit=0
# Finished jobs stay visible to squeue and scontrol for five minutes.
MinJobAge=300
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8
CONF

export SLURM_CONF=$dir/slurm.conf
slurmctld -f "$SLURM_CONF" -i </dev/null >>"$dir/log/start.log" 2>&1
slurmd -f "$SLURM_CONF" </dev/null >>"$dir/log/start.log" 2>&1

# Up when the node is idle.
state=
while [ "$SECONDS" -lt 60 ]; do
    state=$(timeout 5 sinfo -h -N -n "$host" -o '%t' 2>/dev/null || true)
    if [ "$state" = "idle" ]; then
        echo "$SLURM_CONF"
        exit 0
    fi
    sleep 0.5
done
echo "slurm-up: node $host not idle after 60 s (state: '${state:-unknown}'); logs in $dir/log:" >&2
tail -n 20 "$dir"/log/*.log >&2 || true
"$(dirname "$0")/slurm-down.sh" "$dir" >&2 || true
exit 1
