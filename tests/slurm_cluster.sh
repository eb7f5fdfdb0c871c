#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the cluster test.
#
#   tests/slurm_cluster.sh up STATE_DIR     install (apt) if needed, configure, start munged,
#                                        slurmctld and slurmd in the background; wait until
#                                        the node is idle. PIDs and logs go to STATE_DIR.
#   tests/slurm_cluster.sh down STATE_DIR   stop the daemons by PID.
#
# Exit code 3 from `up`: this machine cannot host the cluster as this user (SLURM missing
# and apt-get unavailable, or not root): the test skips with the
# message. Any other failure is an error. tests/test_slurm.py runs this only when asked
# (DNNDIST_TEST_CLUSTER=1, as make test-cluster and .ci/run do): it installs packages and
# starts daemons.
#
# No systemd here: the daemons run in the foreground (-D) as background processes.
# There is no slurmdbd, so `sacct` does not work: run Snakemake with
# `--slurm-status-command squeue`, which needs MinJobAge well above the status-check
# interval (set to 600 s below).
set -euo pipefail

cmd=${1:?usage: $0 up|down STATE_DIR}
state=$(mkdir -p "${2:?usage: $0 up|down STATE_DIR}" && cd "$2" && pwd)
conf=/etc/slurm/slurm.conf  # the job-step plugin drops SLURM_CONF, so it must be here

stop() {
    for name in slurmd slurmctld munged; do
        if [[ -f $state/$name.pid ]]; then
            pid=$(cat "$state/$name.pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            rm -f "$state/$name.pid"
        fi
    done
    # leave no slurm.conf of ours behind: with one and no controller, every `scontrol`
    # (which the Snakemake SLURM plugin runs on import, even for local runs) waits ~10 s
    if [[ -f $conf ]] && grep -q "written by dnndist" "$conf"; then
        rm -f "$conf"
        [[ -f $conf.before-dnndist ]] && mv "$conf.before-dnndist" "$conf"
    fi
    return 0
}

if [[ $cmd == down ]]; then
    stop
    exit 0
fi
[[ $cmd == up ]] || { echo "usage: $0 up|down STATE_DIR" >&2; exit 2; }
if [[ $(id -u) != 0 ]]; then  # the daemons start as root; so would the packages' install
    echo "a SLURM test cluster needs root, and $(id -un) is not root" >&2
    exit 3
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
        || ! command -v sbatch >/dev/null; then
    if ! command -v apt-get >/dev/null; then
        echo "SLURM is not installed and apt-get is unavailable" >&2
        exit 3
    fi
    env DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge \
        > "$state/apt.log" 2>&1 || {
        # the package lists may be missing on a fresh machine
        apt-get update -q >> "$state/apt.log" 2>&1
        env DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge \
            >> "$state/apt.log" 2>&1
    } || { tail -20 "$state/apt.log" >&2; exit 1; }
fi

stop  # a previous cluster of this state dir

# munge: key and runtime directory, daemon as user munge
install -d -o munge -g munge -m 0700 /etc/munge
[[ -s /etc/munge/munge.key ]] || {
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
}
install -d -o munge -g munge -m 0755 /run/munge /var/lib/munge /var/log/munge
runuser -u munge -- /usr/sbin/munged --foreground --force > "$state/munged.log" 2>&1 &
echo $! > "$state/munged.pid"
for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
munge -n | unmunge >/dev/null || { cat "$state/munged.log" >&2; exit 1; }

host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
install -d /etc/slurm "$state/ctld" "$state/slurmd"
[[ -f $conf ]] && ! grep -q "written by dnndist" "$conf" && mv "$conf" "$conf.before-dnndist"
cat > "$conf" <<EOF
# written by dnndist tests/slurm_cluster.sh: single node, no accounting database
ClusterName=dnndist-ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$state/slurmctld.daemon.pid
SlurmdPidFile=$state/slurmd.daemon.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=600
SchedulerType=sched/backfill
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

/usr/sbin/slurmctld -D -i -f "$conf" > "$state/slurmctld.out" 2>&1 &
echo $! > "$state/slurmctld.pid"
/usr/sbin/slurmd -D -f "$conf" > "$state/slurmd.out" 2>&1 &
echo $! > "$state/slurmd.pid"

for _ in $(seq 300); do
    if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
        echo "SLURM up: node $host, $cpus CPUs, $mem MB, partition main"
        exit 0
    fi
    sleep 0.2
done
echo "SLURM did not come up; logs in $state" >&2
tail -5 "$state"/slurmctld.log "$state"/slurmd.log >&2 || true
stop
exit 1
