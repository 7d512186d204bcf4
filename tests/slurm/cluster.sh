#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the SLURM test (tests/test_slurm.py) and for trying the
# slurm profile: Debian's slurmctld, slurmd, slurm-client and munge, no cgroups (proctrack/linuxproc,
# task/none), no accounting database, one partition "debug" and one fake GPU (gres on /dev/null) so that the
# training rule's GPU request can be scheduled. Run as root on Debian/Ubuntu:
#
#   tests/slurm/cluster.sh install   # apt-get install the packages (once)
#   tests/slurm/cluster.sh up        # write /etc/slurm/{slurm,gres}.conf, start munged, slurmctld, slurmd
#   tests/slurm/cluster.sh down      # stop the daemons started by `up`
#
# `up` refuses to overwrite a slurm.conf it did not write, so it never replaces a real cluster's settings.
set -euo pipefail

CONF_DIR=/etc/slurm
STATE_DIR=/var/tmp/cropflow-slurm
MARKER="# written by cropflow tests/slurm/cluster.sh"
PARTITION=debug

log() { echo "cluster.sh: $*" >&2; }

need_root() {
    [ "$(id -u)" -eq 0 ] || { log "run as root (it installs packages and starts system daemons)"; exit 1; }
}

install() {
    need_root
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        log "slurm and munge already installed"
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    # all memory but 1 GiB for the jobs (the node must not report less than it is configured with)
    mem_mb=$(( $(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
    if [ -f "$CONF_DIR/slurm.conf" ] && ! grep -qF "$MARKER" "$CONF_DIR/slurm.conf"; then
        log "$CONF_DIR/slurm.conf exists and was not written by this script; not touching it"
        exit 1
    fi
    mkdir -p "$CONF_DIR" "$STATE_DIR/ctld" "$STATE_DIR/d" "$STATE_DIR/log"
    cat > "$CONF_DIR/slurm.conf" <<CONF
$MARKER
ClusterName=cropflow
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# finished jobs stay visible to squeue for an hour (the executor checks job states with squeue)
MinJobAge=3600
ReturnToService=2
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/d
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
GresTypes=gpu
NodeName=$host CPUs=$cpus RealMemory=$mem_mb Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    # a count-only GPU is rejected by slurmd; a device file makes the node report one
    cat > "$CONF_DIR/gres.conf" <<CONF
$MARKER
AutoDetect=off
NodeName=$host Name=gpu File=/dev/null
CONF
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return
    fi
    [ -s /etc/munge/munge.key ] || { mungekey --create >/dev/null 2>&1 || /usr/sbin/mungekey --create; }
    chown munge:munge /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    # a stale socket of a dead munged makes the new one refuse to start
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged --force
    touch "$STATE_DIR/munged.started"
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.2
    done
    log "munged did not come up"; exit 1
}

up() {
    need_root
    command -v slurmctld >/dev/null || { log "slurmctld not installed: run '$0 install' first"; exit 1; }
    write_conf
    start_munge
    if ! scontrol ping 2>/dev/null | grep -q "is UP"; then
        /usr/sbin/slurmctld
    fi
    [ -f "$STATE_DIR/slurmd.pid" ] && kill -0 "$(cat "$STATE_DIR/slurmd.pid")" 2>/dev/null || /usr/sbin/slurmd
    for _ in $(seq 60); do
        if sinfo -h -p "$PARTITION" -o "%t" 2>/dev/null | grep -qx "idle\|mix\|alloc"; then
            log "up: $(sinfo -h -p "$PARTITION" -o '%P %D %t %c CPUs %m MB %G')"
            return
        fi
        sleep 1
    done
    log "the node did not become idle; logs in $STATE_DIR/log"
    sinfo -R >&2 || true
    tail -20 "$STATE_DIR/log/slurmctld.log" "$STATE_DIR/log/slurmd.log" >&2 || true
    exit 1
}

down() {
    need_root
    scontrol shutdown >/dev/null 2>&1 || true
    for pidfile in "$STATE_DIR/slurmd.pid" "$STATE_DIR/slurmctld.pid"; do
        if [ -f "$pidfile" ]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
            rm -f "$pidfile"
        fi
    done
    # munged too, if `up` started it
    if [ -f "$STATE_DIR/munged.started" ] && [ -f /run/munge/munged.pid ]; then
        kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
        rm -f "$STATE_DIR/munged.started"
    fi
    log "down"
}

case "${1:-}" in
    install) install ;;
    up) up ;;
    down) down ;;
    *) echo "usage: $0 install|up|down" >&2; exit 2 ;;
esac
