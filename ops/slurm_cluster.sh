#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, from Debian's packages (slurm-wlm 22.05, munge):
# munged, slurmctld and slurmd with a configuration of their own, process tracking and task
# plugins that need no cgroups (proctrack/linuxproc, task/none), one partition "debug" holding
# this host. For testing sweeps on a real scheduler (tests/test_slurm.py) and for trying
# hydra/launcher=slurm on a workstation.
#
#   bash ops/slurm_cluster.sh start    # prints: export SLURM_CONF=<dir>/slurm.conf
#   bash ops/slurm_cluster.sh status   # sinfo
#   bash ops/slurm_cluster.sh stop
#
# Settings (environment): PTYCHO_SLURM_DIR (outputs/slurm: configuration, state, logs),
# PTYCHO_SLURM_PORT (6817: slurmctld; slurmd, MariaDB and slurmdbd take the next three). Needs
# root (slurmd starts jobs as their users) and `apt-get install slurm-wlm slurmdbd munge
# mariadb-server`. Job accounting (sacct, which submitit reads to see a job end) runs on
# slurmdbd over a MariaDB server of its own (<dir>/mysql, 127.0.0.1 only).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$(realpath -m "${PTYCHO_SLURM_DIR:-$root/outputs/slurm}")"
port="${PTYCHO_SLURM_PORT:-6817}"
conf="$dir/slurm.conf"
host="$(hostname -s)"

fail() { echo "slurm_cluster: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (slurmd starts jobs as their users)"
for tool in munged slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || fail "$tool not found: apt-get install slurm-wlm munge"
done

write_conf() {
    local cpus memory
    cpus="$(nproc)"
    memory="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
    mkdir -p "$dir/state" "$dir/spool"
    cat >"$conf" <<EOF
ClusterName=ptycho
SlurmctldHost=$host
SlurmUser=root
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$host
AccountingStoragePort=$((port + 3))
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=2048
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
KillWait=10
InactiveLimit=0
MinJobAge=300
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

write_dbd_conf() {
    cat >"$dir/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=$host
DbdPort=$((port + 3))
SlurmUser=root
PidFile=$dir/slurmdbd.pid
LogFile=$dir/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((port + 2))
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$dir/slurmdbd.conf"
}

start_database() {  # MariaDB for slurmdbd, in a folder of its own, on 127.0.0.1 only
    local data="$dir/mysql" socket="$dir/mysql.sock"
    if [ ! -d "$data/mysql" ]; then
        mariadb-install-db --datadir="$data" --user=root --auth-root-authentication-method=socket \
            >"$dir/mysql-install.log" 2>&1 || fail "mariadb-install-db failed ($dir/mysql-install.log)"
    fi
    if ! daemon_alive mysql; then
        setsid mariadbd --datadir="$data" --socket="$socket" --port=$((port + 2)) \
            --bind-address=127.0.0.1 --user=root --pid-file="$dir/mysql.pid" \
            --log-error="$dir/mysql.log" --skip-log-bin --innodb-buffer-pool-size=64M \
            </dev/null >/dev/null 2>&1 &
        local waited=0
        until mariadb --socket="$socket" -e "SELECT 1" >/dev/null 2>&1; do
            [ "$waited" -lt 60 ] || fail "MariaDB did not start (see $dir/mysql.log)"
            sleep 1; waited=$((waited + 1))
        done
    fi
    mariadb --socket="$socket" -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

munge_works() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_works; then return; fi
    pkill -x munged 2>/dev/null && sleep 1 || true  # one without its socket or key: restart
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    runuser -u munge -- munged || munged --force
    local waited=0
    until munge_works; do
        [ "$waited" -lt 20 ] || fail "munged does not answer (munge -n | unmunge)"
        sleep 0.5; waited=$((waited + 1))
    done
}

daemon_alive() { [ -f "$dir/$1.pid" ] && kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }

start() {
    write_conf
    write_dbd_conf
    start_munge
    start_database
    export SLURM_CONF="$conf"
    if ! daemon_alive slurmdbd; then
        slurmdbd  # reads slurmdbd.conf beside $SLURM_CONF
        local tries=0
        until sacctmgr -n list cluster >/dev/null 2>&1; do
            [ "$tries" -lt 60 ] || fail "slurmdbd did not answer (see $dir/slurmdbd.log)"
            sleep 1; tries=$((tries + 1))
        done
        sacctmgr -i add cluster ptycho >/dev/null 2>&1 || true
    fi
    daemon_alive slurmctld || slurmctld -f "$conf"
    daemon_alive slurmd || slurmd -f "$conf"
    local waited=0
    until sinfo -h -o "%t" 2>/dev/null | grep -qE "^(idle|mix|alloc)"; do
        [ "$waited" -lt 60 ] || fail "the node did not come up in 60 s (see $dir/slurmctld.log, $dir/slurmd.log)"
        scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
        sleep 1; waited=$((waited + 1))
    done
    echo "slurm_cluster: $(sinfo -h -o '%P %D node(s) %t, %c CPUs')"
    echo "export SLURM_CONF=$conf"
}

stop() {
    export SLURM_CONF="$conf"
    if [ -f "$conf" ]; then scancel --full --quiet -u root 2>/dev/null || true; fi
    for daemon in slurmd slurmctld slurmdbd mysql; do
        if daemon_alive "$daemon"; then
            local pid; pid="$(cat "$dir/$daemon.pid")"
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            kill -KILL "$pid" 2>/dev/null || true
            echo "slurm_cluster: $daemon stopped"
        fi
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status)
        if daemon_alive slurmctld; then SLURM_CONF="$conf" sinfo; else echo "slurmctld: stopped"; fi
        ;;
    *) echo "usage: bash ops/slurm_cluster.sh start|stop|status" >&2; exit 2 ;;
esac
