#!/usr/bin/env bash
# A throwaway one-node Slurm cluster on this machine, for trying hydra/launcher=submitit_slurm and for
# tests/test_slurm.py (which skips where no Slurm answers). Needs root and the Debian packages
#   apt-get install slurmctld slurmd slurm-client munge
# Usage:  scripts/slurm.sh start    # munged (unless one already answers), slurmctld, slurmd; waits for the node
#         scripts/slurm.sh status   # the node as sinfo sees it
#         scripts/slurm.sh stop     # stops exactly what `start` started, removes the config it wrote
# The node has this machine's CPUs (nproc) and memory; ProctrackType=proctrack/linuxproc and TaskPlugin=task/none
# need no cgroups, so it also runs in a container. No accounting database: submitit warns that sacct is off.
set -euo pipefail

STATE=${POSENC_SLURM_DIR:-/var/tmp/posenc-slurm}   # pid files, logs, Slurm's state and spool
CONF=/etc/slurm/slurm.conf                          # where sbatch, srun and the daemons look for it
MARK="# written by posenc-exp scripts/slurm.sh; removed by scripts/slurm.sh stop"
NODE=$(hostname -s)

die() { echo "slurm.sh: $*" >&2; exit 1; }

write_conf() {
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))  # 90% of the RAM, in MB
    cat > "$CONF" <<CONF
$MARK
ClusterName=posenc
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$NODE CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
}

munge_answers() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

stop_pidfile() {  # stop_pidfile NAME: the process whose pid STATE/NAME.pid holds, if it still runs
    local file="$STATE/$1.pid" pid
    [[ -f $file ]] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        echo "slurm.sh: stopped $1 (pid $pid)"
    fi
    rm -f "$file"
}

stop() {
    stop_pidfile slurmd
    stop_pidfile slurmctld
    [[ -f $STATE/munged.started ]] && { stop_pidfile munged; rm -f "$STATE/munged.started"; }
    if [[ -f $CONF ]] && head -n 1 "$CONF" | grep -qF "$MARK"; then rm -f "$CONF"; fi
    rm -rf "$STATE/state" "$STATE/spool"  # the logs stay, for a look after the fact
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1; }

start() {
    [[ $(id -u) == 0 ]] || die "start needs root (the daemons run as root)"
    for tool in munged munge slurmctld slurmd sinfo sbatch; do
        command -v "$tool" >/dev/null || die "$tool not found: apt-get install slurmctld slurmd slurm-client munge"
    done
    if [[ -f $CONF ]] && ! head -n 1 "$CONF" | grep -qF "$MARK"; then
        die "$CONF exists and is not ours: this script only starts a throwaway cluster where none is configured"
    fi
    [[ -f $STATE/slurmctld.pid ]] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null && die "already running ($0 stop first)"
    trap 'echo "slurm.sh: start failed; logs in $STATE" >&2; stop' ERR
    mkdir -p "$STATE/state" "$STATE/spool"
    write_conf
    if ! munge_answers; then
        mkdir -p /run/munge /var/lib/munge /var/log/munge
        munged --force --pid-file="$STATE/munged.pid" --log-file="$STATE/munged.log" --seed-file="$STATE/munged.seed"
        touch "$STATE/munged.started"
        for _ in $(seq 25); do munge_answers && break; sleep 0.2; done
        munge_answers || die "munged does not answer (see $STATE/munged.log)"
    fi
    slurmctld -c   # -c: a clean start, no jobs from an earlier cluster
    slurmd
    local state=""
    for _ in $(seq 60); do
        state=$(node_state)
        [[ $state == idle* ]] && break
        [[ $state == down* || $state == drain* ]] && scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
        sleep 0.5
    done
    [[ $state == idle* ]] || die "node $NODE is '${state:-not known}', not idle, after 30 s (logs in $STATE)"
    trap - ERR
    echo "slurm.sh: one-node cluster up: $NODE, $(nproc) CPUs, partition debug; stop it with $0 stop"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo -N -o "%N %T %c %m %P" ;;
    *) die "usage: $0 start|stop|status" ;;
esac
