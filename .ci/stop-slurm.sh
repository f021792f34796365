#!/usr/bin/env bash
# Stop the daemons that .ci/start-slurm.sh started, by the PIDs it recorded (never by name).
# Leaves packages, configuration and the accounting database in place, so a later
# start-slurm.sh is quick.
set -uo pipefail
STATE=${LPC_SLURM_STATE:-/tmp/lpc-bench-slurm}
[ -d "$STATE/pids" ] || { echo "stop-slurm: no PIDs recorded under $STATE" >&2; exit 0; }
# the reverse of the start order: compute node, controller, accounting, database, munge
for name in slurmd slurmctld slurmdbd mariadbd munged; do
    f=$STATE/pids/$name.pid
    [ -s "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        echo "stop-slurm: stopped $name ($pid)" >&2
    fi
    rm -f "$f"
done
