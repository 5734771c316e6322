#!/usr/bin/env bash
# A single-node Slurm on this host, for the tests in tests/slurm/ and for trying `--executor slurm` on a workstation.
#
# Debian/Ubuntu, as root, without systemd: installs munge, MariaDB, slurmdbd, slurmctld and slurmd from apt (the
# distribution's slurm-wlm, 22.05 on Debian 12) and starts each daemon directly. The node is this host, with its
# cores and memory, in one partition `debug`; no cgroups (proctrack/linuxproc, task/none: containers rarely give
# Slurm a cgroup tree), select/cons_tres on cores, JobRequeue=1, time limits enforced, and accounting through
# slurmdbd on a local MariaDB: submitit learns that a job ended from `sacct` alone, so without accounting a job that
# dies without writing its result is waited on forever.
#
# Idempotent: a daemon already running is left alone, a config already in place is kept (delete the files under
# /etc/slurm to rewrite them). Safe to run twice, also at once (a lock). Prints how long it took; where Slurm cannot
# be brought up it exits non-zero with one line saying why. The daemons stay up after it returns (they are
# system-wide); `scripts/slurm-local.sh --stop` stops the Slurm daemons it started (munge and MariaDB stay).
set -euo pipefail

START_S=$(date +%s)
LOGS=/var/log/slurm-local  # each daemon's own log, and apt's output
CONF=/etc/slurm
DB_NAME=slurm_acct_db DB_USER=slurm DB_PASS=slurm-local  # a local database reachable from localhost only

die() { echo "slurm-local: $*" >&2; exit 1; }
took() { echo "slurm-local: $1 in $(( $(date +%s) - START_S )) s"; }
trap 'die "failed at line $LINENO: $BASH_COMMAND (see $LOGS)"' ERR  # whatever else fails: one line too

if [ "${1:-}" = "--stop" ]; then
  for daemon in slurmd slurmctld slurmdbd; do
    [ -f "/run/slurm-local/$daemon.pid" ] && kill "$(cat "/run/slurm-local/$daemon.pid")" 2>/dev/null || true
  done
  exit 0
fi

[ "$(id -u)" = 0 ] || die "needs root (it installs packages and starts system daemons); run it with sudo"
command -v apt-get >/dev/null || die "needs apt-get (Debian or Ubuntu); see the README's 'On a Slurm cluster'"
mkdir -p "$LOGS" /run/slurm-local
exec 9>/run/slurm-local/lock
flock 9  # two runs at once: the second waits, then finds everything up

install_packages() {
  local packages=(slurm-wlm slurmdbd munge mariadb-server mariadb-client)
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] && return 0
  echo "slurm-local: installing ${missing[*]} (apt)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}"; } >"$LOGS/apt.log" 2>&1 || die "apt-get install ${missing[*]} failed (see $LOGS/apt.log)"
}

running() { pgrep -x "$1" >/dev/null; }

daemon() { "$@" 9>&- </dev/null; }  # a daemon must not inherit the lock (it would hold it for its lifetime)

wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds
  local limit_s=$1 what=$2
  shift 2
  for _ in $(seq "$limit_s"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 1
  done
  die "$what did not come up within $limit_s s (see $LOGS)"
}

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  running munged || daemon runuser -u munge -- /usr/sbin/munged >>"$LOGS/munged.log" 2>&1 \
    || die "munged would not start (see $LOGS/munged.log)"
  wait_for 20 munge sh -c 'munge -n | unmunge'
}

start_mariadb() {
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  if ! running mariadbd && ! running mysqld; then
    setsid /usr/bin/mysqld_safe --skip-syslog --bind-address=127.0.0.1 >>"$LOGS/mariadb.log" 2>&1 9>&- </dev/null &
  fi
  wait_for 60 MariaDB mysqladmin ping
  mysql -e "CREATE DATABASE IF NOT EXISTS $DB_NAME;
            CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
            GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';" || die "MariaDB refused to create $DB_NAME"
}

WROTE=0  # a config written now, while the daemons run: they reread it (scontrol reconfigure)
write_if_absent() {  # write_if_absent FILE MODE: stdin into FILE unless FILE exists
  local file=$1 mode=$2
  if [ -s "$file" ]; then cat >/dev/null; return 0; fi
  cat >"$file.new" && chmod "$mode" "$file.new" && chown slurm:slurm "$file.new" && mv "$file.new" "$file"
  WROTE=1
}

write_configs() {
  local host cpus mem_mb
  host=$(hostname -s)
  cpus=$(nproc)
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))  # leave a tenth to the system
  mkdir -p "$CONF" /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
  chown -R slurm:slurm /var/lib/slurm /var/log/slurm
  write_if_absent "$CONF/slurmdbd.conf" 0600 <<EOF
# written by scripts/slurm-local.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=/run/slurm-local/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
  write_if_absent "$CONF/slurm.conf" 0644 <<EOF
# written by scripts/slurm-local.sh: one node (this host), partition debug, no cgroups, accounting via slurmdbd
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm-local/slurmctld.pid
SlurmdPidFile=/run/slurm-local/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=2
MpiDefault=none
# a job reaching its time limit, cancelled or requeued gets SIGTERM, then SIGKILL KillWait seconds later (robustscale
# checkpoints before the limit, on the earlier USR2); ended jobs stay in slurmctld's memory for MinJobAge seconds,
# then sacct answers for them
KillWait=5
MinJobAge=300
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SlurmctldTimeout=60
SlurmdTimeout=60
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start_slurm() {
  running slurmdbd || daemon /usr/sbin/slurmdbd >>"$LOGS/slurmdbd.start.log" 2>&1 \
    || die "slurmdbd would not start (see $LOGS/slurmdbd.log)"
  wait_for 60 slurmdbd sacctmgr -n list cluster
  sacctmgr -n list cluster format=cluster | grep -qw local || sacctmgr -i add cluster local >/dev/null \
    || die "sacctmgr could not add cluster 'local'"
  running slurmctld || daemon /usr/sbin/slurmctld >>"$LOGS/slurmctld.start.log" 2>&1 \
    || die "slurmctld would not start (see $LOGS/slurmctld.log)"
  wait_for 60 slurmctld scontrol ping
  [ "$WROTE" = 0 ] || scontrol reconfigure >/dev/null 2>&1 || true  # a new slurm.conf under running daemons
  running slurmd || daemon /usr/sbin/slurmd >>"$LOGS/slurmd.start.log" 2>&1 \
    || die "slurmd would not start (see $LOGS/slurmd.log)"
  if sinfo -h -n "$(hostname -s)" -o %t | grep -Eq '^(down|drain|drng|fail)'; then  # left so by a crash
    scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
  fi
  wait_for 60 "node $(hostname -s)" sh -c "sinfo -h -n $(hostname -s) -o %t | grep -Eq '^(idle|mix|alloc)'"
}

check_job() {  # a real job, through the scheduler and into accounting
  local id
  id=$(sbatch --parsable -p debug -t 1 -o /dev/null --wrap true) || die "sbatch refused a one-line job"
  wait_for 60 "job $id in sacct" sh -c "sacct -n -X -j $id -o state | grep -q COMPLETED"
}

install_packages
start_munge
start_mariadb
write_configs
start_slurm
check_job
took "Slurm up on $(hostname -s) ($(nproc) CPUs, partition debug, accounting in MariaDB)"
