#!/usr/bin/env bash
# A REAL single-node SLURM cluster on loopback, for tests and demos of `hydra/launcher=slurm`.
#
#   scripts/local_slurm.sh start    # install what is missing (apt), write configs, start the daemons,
#                                   # wait until the node is idle; a no-op when it is already up
#   scripts/local_slurm.sh status   # the daemons, their PIDs, and sinfo (exit 0 when all are up)
#   scripts/local_slurm.sh stop     # cancel leftover jobs, then stop exactly the daemons `start` started
#   scripts/local_slurm.sh env      # the `export SLURM_CONF=...` line for a shell
#
# Debian 12 / SLURM 22.05, run as root, no systemd needed: munged, mariadbd (accounting storage),
# slurmdbd, slurmctld and slurmd run as plain background daemons. Accounting stays on because
# submitit asks sacct about jobs that died; without it, waiting on such a job hangs.
# No cgroups (proctrack/linuxproc, task/none). Every daemon is stopped by the PID file it wrote, never
# by name. State, configs and logs live under $PREFRUN_SLURM_DIR (default /tmp/prefrun-slurm).
#
# Settings (environment): PREFRUN_SLURM_DIR, PREFRUN_SLURM_CLUSTER (prefrun), PREFRUN_SLURM_PARTITION
# (local), PREFRUN_SLURM_PORT (6817: slurmctld; +1 slurmd, +2 slurmdbd), PREFRUN_SLURM_DB_PORT (13306),
# PREFRUN_SLURM_WAIT_S (60).
set -euo pipefail

STATE="${PREFRUN_SLURM_DIR:-/tmp/prefrun-slurm}"
CLUSTER="${PREFRUN_SLURM_CLUSTER:-prefrun}"
PARTITION="${PREFRUN_SLURM_PARTITION:-local}"
CTLD_PORT="${PREFRUN_SLURM_PORT:-6817}"
SLURMD_PORT=$((CTLD_PORT + 1))
DBD_PORT=$((CTLD_PORT + 2))
DB_PORT="${PREFRUN_SLURM_DB_PORT:-13306}"
WAIT_S="${PREFRUN_SLURM_WAIT_S:-60}"
HOST="$(hostname -s)"
CONF="$STATE/slurm.conf"
PIDS="$STATE/pids"          # one file per daemon this script started: the PID, copied from the daemon's own file
LOGS="$STATE/log"
DB="$STATE/mariadb"
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server mariadb-client)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)   # start order; stop goes backwards
export SLURM_CONF="$CONF"   # slurmdbd finds slurmdbd.conf next to it; the clients read it

say() { echo "local_slurm: $*" >&2; }
die() { say "error: $*"; exit 1; }

exe_of() {   # the binary a daemon runs as (Debian links slurmctld -> slurmctld-wlm through alternatives)
  readlink -f "/usr/sbin/$1"
}

pid_of() {   # the PID of our daemon $1 when it is alive and still that binary; empty otherwise
  local f="$PIDS/$1.pid" pid
  [[ -s "$f" ]] || return 0
  pid="$(tr -dc '0-9' <"$f")"
  [[ -n "$pid" && -d "/proc/$pid" ]] || return 0
  [[ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" == "$(exe_of "$1")" ]] && echo "$pid"
  return 0
}

record_pid() {   # record_pid NAME DAEMON_PIDFILE: wait for the daemon's own PID file, keep a copy
  local name="$1" file="$2" i pid
  for ((i = 0; i < 100; i++)); do
    if [[ -s "$file" ]]; then
      pid="$(tr -dc '0-9' <"$file")"
      if [[ -n "$pid" && -d "/proc/$pid" ]]; then
        echo "$pid" >"$PIDS/$name.pid"
        return 0
      fi
    fi
    sleep 0.1
  done
  die "$name did not start (no live PID in $file); see $LOGS/"
}

# ---------------------------------------------------------------- packages

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  say "installing ${missing[*]}"
  # Keep the packages' init scripts from starting daemons we would not own (Docker images already do this).
  local policy_made=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy_made=1
  fi
  local rc=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null; } || rc=$?
  ((policy_made)) && rm -f /usr/sbin/policy-rc.d
  ((rc == 0)) || die "apt-get install failed (rc=$rc)"
}

# ---------------------------------------------------------------- configs

write_configs() {
  mkdir -p "$STATE" "$PIDS" "$LOGS" "$STATE/ctld" "$STATE/spool/slurmd-$HOST"
  chmod 755 "$STATE"
  # The node as slurmd sees it; RealMemory at 90% so the OS keeps some.
  local node mem
  node="$(slurmd -C | head -n 1)"
  [[ "$node" == NodeName=* ]] || die "slurmd -C gave: $node"
  mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")"
  node="$(sed -e "s/^NodeName=[^ ]*/NodeName=$HOST NodeAddr=127.0.0.1/" \
              -e "s/RealMemory=[0-9]*/RealMemory=$((mem * 9 / 10))/" <<<"$node")"
  cat >"$CONF" <<EOF
# Written by scripts/local_slurm.sh: a single-node cluster on loopback.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/slurmd-%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=30
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=60
Waittime=0
$node State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  local pass_file="$STATE/.dbpass"
  [[ -s "$pass_file" ]] || (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$pass_file")
  (umask 077 && cat >"$STATE/slurmdbd.conf" <<EOF
# Written by scripts/local_slurm.sh
AuthType=auth/munge
DbdHost=$HOST
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$pass_file")
StorageLoc=slurm_acct_db
EOF
  )
  chown root:root "$STATE/slurmdbd.conf"
  chmod 600 "$STATE/slurmdbd.conf"
  # Let `sinfo`, `sbatch`, ... work without SLURM_CONF, unless the machine has its own slurm.conf.
  mkdir -p /etc/slurm
  if [[ ! -e /etc/slurm/slurm.conf || "$(readlink /etc/slurm/slurm.conf)" == "$CONF" ]]; then
    ln -sfn "$CONF" /etc/slurm/slurm.conf
  else
    say "note: /etc/slurm/slurm.conf is not ours; export SLURM_CONF=$CONF"
  fi
}

# ---------------------------------------------------------------- daemons

start_munged() {
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    [[ -n "$(pid_of munged)" ]] || say "munged already running (not started here; left alone)"
    return 0
  fi
  local key=/etc/munge/munge.key
  if [[ ! -s "$key" ]]; then
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --keyfile="$key" --force; else
      dd if=/dev/urandom of="$key" bs=1 count=1024 status=none; fi
  fi
  chown munge:munge "$key" && chmod 400 "$key"
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 755 /run/munge
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  record_pid munged /run/munge/munged.pid
}

start_mariadbd() {
  mkdir -p "$DB"
  chown mysql:mysql "$DB"
  if [[ ! -d "$DB/data/mysql" ]]; then
    mariadb-install-db --no-defaults --user=mysql --datadir="$DB/data" --auth-root-authentication-method=socket \
      --skip-test-db >"$LOGS/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $LOGS/mariadb-install.log"
  fi
  rm -f "$DB/mariadb.pid"
  setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DB/data" --socket="$DB/mysqld.sock" \
    --pid-file="$DB/mariadb.pid" --port="$DB_PORT" --bind-address=127.0.0.1 --log-error="$LOGS/mariadb.log" \
    --innodb-buffer-pool-size=64M --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 \
    </dev/null >/dev/null 2>&1 &
  record_pid mariadbd "$DB/mariadb.pid"
  local i
  for ((i = 0; i < 100; i++)); do
    mariadb --no-defaults -S "$DB/mysqld.sock" -u root -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.2
  done
  local pass; pass="$(cat "$STATE/.dbpass")"
  mariadb --no-defaults -S "$DB/mysqld.sock" -u root -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pass';
    ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
    ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pass';
    CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" || die "mariadb did not come up; see $LOGS/mariadb.log"
}

start_slurmdbd() {
  rm -f "$STATE/slurmdbd.pid"
  slurmdbd
  record_pid slurmdbd "$STATE/slurmdbd.pid"
  local i
  for ((i = 0; i < 100; i++)); do
    sacctmgr -n list cluster >/dev/null 2>&1 && break
    sleep 0.2
  done
  if ! sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed; see $LOGS/slurmdbd.log"
  fi
}

start_slurmctld() {
  rm -f "$STATE/slurmctld.pid"
  slurmctld
  record_pid slurmctld "$STATE/slurmctld.pid"
}

start_slurmd() {
  rm -f "$STATE/slurmd.pid"
  slurmd -N "$HOST"
  record_pid slurmd "$STATE/slurmd.pid"
}

node_state() { timeout 10 sinfo -h -N -n "$HOST" -o %t 2>/dev/null | head -n 1 || true; }

wait_idle() {
  local t0=$SECONDS st=""
  while ((SECONDS - t0 < WAIT_S)); do
    st="$(node_state)"
    case "$st" in
      idle | mix | alloc) return 0 ;;
      down* | drain* | drng*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  say "node $HOST not idle after ${WAIT_S}s (state: '${st:-unreachable}'); last log lines:"
  tail -n 5 "$LOGS"/slurmctld.log "$LOGS"/slurmd.log "$LOGS"/slurmdbd.log >&2 2>/dev/null || true
  return 1
}

all_up() {
  local d
  for d in "${DAEMONS[@]}"; do
    if [[ "$d" == munged ]]; then munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 || return 1
    else [[ -n "$(pid_of "$d")" ]] || return 1; fi
  done
}

cmd_start() {
  [[ $EUID -eq 0 ]] || die "run as root (it installs packages and starts daemons)"
  local t0=$SECONDS
  if all_up && [[ "$(node_state)" =~ ^(idle|mix|alloc)$ ]]; then
    say "already running ($STATE)"
    return 0
  fi
  install_packages
  # Fresh configs only when no SLURM daemon of ours runs, so running daemons never disagree with them.
  if [[ -z "$(pid_of slurmdbd)$(pid_of slurmctld)$(pid_of slurmd)" ]]; then write_configs; fi
  local d
  for d in "${DAEMONS[@]}"; do
    [[ -n "$(pid_of "$d")" ]] || "start_$d"
  done
  wait_idle || { say "start failed"; exit 1; }
  say "up in $((SECONDS - t0))s: cluster $CLUSTER, partition $PARTITION, node $HOST (state in $STATE)"
}

stop_one() {   # TERM, then KILL after 20 s; only the PID from our file, only if it is still that binary
  local name="$1" pid i
  pid="$(pid_of "$name")"
  if [[ -n "$pid" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do [[ -d "/proc/$pid" ]] || break; sleep 0.1; done
    [[ -d "/proc/$pid" ]] && { say "$name ($pid) ignored TERM; KILL"; kill -KILL "$pid" 2>/dev/null || true; }
    say "stopped $name ($pid)"
  fi
  rm -f "$PIDS/$name.pid"
}

cmd_stop() {
  if [[ -n "$(pid_of slurmctld)" ]]; then   # no job outlives the cluster
    local jobs
    jobs="$(timeout 10 squeue -h -o %A 2>/dev/null | tr '\n' ' ' || true)"
    if [[ -n "${jobs// /}" ]]; then
      say "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      local i
      for ((i = 0; i < 60; i++)); do [[ -z "$(timeout 10 squeue -h -o %A 2>/dev/null)" ]] && break; sleep 0.5; done
    fi
  fi
  local i
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do stop_one "${DAEMONS[$i]}"; done
  if [[ -L /etc/slurm/slurm.conf && "$(readlink /etc/slurm/slurm.conf)" == "$CONF" ]]; then rm -f /etc/slurm/slurm.conf; fi
}

cmd_status() {
  local d pid rc=0
  for d in "${DAEMONS[@]}"; do
    pid="$(pid_of "$d")"
    if [[ -n "$pid" ]]; then echo "$d: running (pid $pid)"
    elif [[ "$d" == munged ]] && munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
      echo "$d: running (not started by this script)"
    else echo "$d: stopped"; rc=3; fi
  done
  if [[ -n "$(pid_of slurmctld)" ]]; then timeout 10 sinfo || rc=3; fi
  return $rc
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
