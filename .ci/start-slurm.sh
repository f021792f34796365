#!/usr/bin/env bash
# Bring up a throw-away single-node Slurm cluster on this machine for the `slurm` tests
# (tests/test_slurm.py). Meant for CI containers and dev VMs: Debian/Ubuntu, root, no
# systemd needed. Safe to call again: it does nothing when `sinfo` already answers.
#
# What it does:
#   1. installs munge, slurmctld, slurmd, the client tools, slurmdbd and MariaDB (apt-get),
#      if they are missing;
#   2. writes /etc/slurm/slurm.conf (one node = this machine, partition "debug") and
#      slurmdbd.conf, unless a slurm.conf not written by this script is already there;
#   3. starts munged, MariaDB, slurmdbd, slurmctld and slurmd in the background and waits
#      until the node is idle. Accounting (slurmdbd) is needed: without it `sacct` fails and
#      a cancelled job can never be told apart from a running one.
#
# Daemon PIDs and logs go to $LPC_SLURM_STATE (default /tmp/lpc-bench-slurm);
# .ci/stop-slurm.sh stops exactly those PIDs.
# Exit codes: 0 up, 3 cannot be started here (not root / no apt-get / foreign config), 1 failed.
set -euo pipefail

STATE=${LPC_SLURM_STATE:-/tmp/lpc-bench-slurm}
MARK="# written by lpc-bench .ci/start-slurm.sh"
say() { echo "start-slurm: $*" >&2; }

node_idle() { sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; }

if command -v sinfo >/dev/null 2>&1 && node_idle; then
    say "Slurm already answers (sinfo): nothing to do"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    say "needs root to install and start Slurm daemons"; exit 3
fi
if [ -f /etc/slurm/slurm.conf ] && ! grep -qF "$MARK" /etc/slurm/slurm.conf; then
    say "/etc/slurm/slurm.conf exists and was not written by this script: not touching it"; exit 3
fi

need=()
for cmd_pkg in munged:munge slurmctld:slurmctld slurmd:slurmd sinfo:slurm-client \
               slurmdbd:slurmdbd mariadbd:mariadb-server-core mariadb:mariadb-client-core; do
    command -v "${cmd_pkg%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${cmd_pkg%%:*}" ] || need+=("${cmd_pkg#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || { say "missing ${need[*]} and no apt-get to install them"; exit 3; }
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    mkdir -p "$STATE"
    apt-get update -qq >"$STATE/apt-update.log" 2>&1 || { say "apt-get update failed (see $STATE/apt-update.log)"; exit 1; }
    apt-get install -y -qq --no-install-recommends "${need[@]}" >"$STATE/apt-install.log" 2>&1 \
        || { say "apt-get install failed (see $STATE/apt-install.log)"; exit 1; }
fi

mkdir -p "$STATE/pids"
alive() { [ -s "$STATE/pids/$1" ] && kill -0 "$(cat "$STATE/pids/$1")" 2>/dev/null; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    local t=0
    until "$@" >/dev/null 2>&1; do
        sleep 0.25; t=$((t + 1))
        if [ $t -ge $((limit * 4)) ]; then say "timed out waiting for $what (logs in $STATE)"; exit 1; fi
    done
}

# --- munge: shared-secret authentication between the daemons and the client tools
[ -s /etc/munge/munge.key ] || mungekey -c -k /etc/munge/munge.key
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
if ! alive munged.pid; then
    runuser -u munge -- /usr/sbin/munged --force
    wait_for 10 munged test -s /run/munge/munged.pid
    cp /run/munge/munged.pid "$STATE/pids/munged.pid"
fi
wait_for 10 "munge round trip" sh -c 'munge -n | unmunge'

# --- configuration: this machine is the controller and the only compute node
host=$(hostname -s)
mem_mb=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat >/etc/slurm/slurm.conf <<EOF
$MARK
ClusterName=lpcbench
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# no cgroups in containers: track processes by /proc, no task confinement; cores are the
# only consumable (a job without --mem must not take the whole node's memory)
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# a cancelled or timed-out job is SIGKILLed 5 s after SIGTERM (default 30 s): quicker tests
KillWait=5
# a requeued job (time limit, preemption) may start again after cred_expire s (default 120)
AuthInfo=cred_expire=10
# look at pending jobs every few seconds (defaults: 60 s main loop, 30 s backfill)
SchedulerParameters=sched_interval=3,bf_interval=3
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

# --- accounting: MariaDB (private data folder under STATE) + slurmdbd
db=$STATE/mariadb
if ! alive mariadbd.pid; then
    if [ ! -d "$db/data/mysql" ]; then
        mkdir -p "$db"
        mariadb-install-db --user=root --datadir="$db/data" --auth-root-authentication-method=socket \
            >"$STATE/mariadb-install.log" 2>&1
    fi
    setsid /usr/sbin/mariadbd --user=root --datadir="$db/data" --socket="$db/sock" --pid-file="$db/pid" \
        --bind-address=127.0.0.1 --port=3306 --log-error="$db/error.log" </dev/null >/dev/null 2>&1 &
    echo $! >"$STATE/pids/mariadbd.pid"
fi
wait_for 60 MariaDB mariadb -S "$db/sock" -e 'select 1'
mariadb -S "$db/sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'lpcbench';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
cat >/etc/slurm/slurmdbd.conf <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
LogFile=/var/log/slurm/slurmdbd.log
PidFile=$STATE/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=lpcbench
StorageLoc=slurm_acct_db
EOF
chmod 600 /etc/slurm/slurmdbd.conf
if ! alive slurmdbd.pid; then
    setsid slurmdbd -D </dev/null >"$STATE/slurmdbd.out" 2>&1 &
    echo $! >"$STATE/pids/slurmdbd.pid"
fi
wait_for 60 slurmdbd sacctmgr -n show cluster

# --- the controller and the node daemon
if ! alive slurmctld.pid; then
    setsid slurmctld -D -i </dev/null >"$STATE/slurmctld.out" 2>&1 &
    echo $! >"$STATE/pids/slurmctld.pid"
fi
if ! alive slurmd.pid; then
    setsid slurmd -D </dev/null >"$STATE/slurmd.out" 2>&1 &
    echo $! >"$STATE/pids/slurmd.pid"
fi
wait_for 60 "an idle node" node_idle
say "Slurm is up (partition debug, $(nproc) CPUs); PIDs in $STATE/pids"
