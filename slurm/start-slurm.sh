#!/usr/bin/env bash
# Start a local Slurm for tlf's tests: Debian's slurm-wlm + munge, everything under
# $TLF_SLURM_DIR (default /tmp/tlf-slurm), daemons in the background with their pids in
# run/*.pid (stop-slurm.sh stops exactly those). Idempotent: a healthy cluster is left alone.
#
#   NUM_NODES (default 2)  slurmd daemons on this host, node1..nodeN, so -N 2 jobs run
#   NODE_CPUS (default 8)  CPUs each node declares (more than the machine has: jobs queue)
#   DCU_COUNT (default 4)  count-only GRES dcu:N and gpu:N per node (Slurm sets no *_VISIBLE_DEVICES
#                          for count-only GRES: job.sbatch fills the profile's variable in)
# Partitions: debug (default) and kshdtest (the blog's). Clients: source $TLF_SLURM_DIR/env.sh
set -euo pipefail
BASE=${TLF_SLURM_DIR:-/tmp/tlf-slurm}
NUM_NODES=${NUM_NODES:-2}
NODE_CPUS=${NODE_CPUS:-8}
DCU_COUNT=${DCU_COUNT:-4}
CTLD_PORT=${CTLD_PORT:-16817}
SLURMD_PORT=${SLURMD_PORT:-16818}
HOST=$(hostname -s)
CONF=$BASE/etc/slurm.conf
SOCK=$BASE/munge/munge.socket.2
export SLURM_CONF=$CONF
log() { echo "[start-slurm] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $(id -u) == 0 ]] || die "needs root (apt-get; the daemons run as root)"

NODES=(); for i in $(seq 1 "$NUM_NODES"); do NODES+=("node$i"); done
NODELIST="node[1-$NUM_NODES]"
[[ $NUM_NODES == 1 ]] && NODELIST=node1

# 1. packages (policy-rc.d keeps the packages' own services from starting)
missing=()
for p in munge slurmctld slurmd slurm-client; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  log "installing ${missing[*]}"
  made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null; apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
  [[ $made_policy == 1 ]] && rm -f /usr/sbin/policy-rc.d
fi

# 2. directories, munge key, configuration
mkdir -p "$BASE"/{etc,state,log,run,munge}
for n in "${NODES[@]}"; do mkdir -p "$BASE/spool/$n"; done
chmod 755 "$BASE" "$BASE/munge"
[[ -s $BASE/munge/munge.key ]] || dd if=/dev/urandom of="$BASE/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$BASE/munge/munge.key"
new_conf=$(mktemp)
cat > "$new_conf" <<CONF
# Written by tlf's slurm/start-slurm.sh: a test cluster on one host.
ClusterName=tlftest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire=10: a requeued job restarts in ~15 s instead of ~2 min
AuthInfo=socket=$SOCK,cred_expire=10
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool/%n
SlurmctldPidFile=$BASE/run/slurmctld.daemon.pid
SlurmdPidFile=$BASE/run/slurmd-%n.daemon.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=2,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Nodes declare more CPUs than this machine has.
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=10
MinJobAge=3600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$BASE/log/jobcomp.txt
GresTypes=dcu,gpu
NodeName=$NODELIST NodeAddr=127.0.0.1 NodeHostname=$HOST Port=$SLURMD_PORT-$((SLURMD_PORT + NUM_NODES - 1)) CPUs=$NODE_CPUS RealMemory=64000 Gres=dcu:$DCU_COUNT,gpu:4 State=UNKNOWN
PartitionName=debug Nodes=$NODELIST Default=YES MaxTime=INFINITE State=UP
PartitionName=kshdtest Nodes=$NODELIST Default=NO MaxTime=INFINITE State=UP
CONF
[[ $NUM_NODES == 1 ]] && sed -i "s/ Port=[0-9-]*//" "$new_conf"
# Slurm's gpu plugin ignores count-only GRES: back gpu:4 with four harmless device files
# (TaskPlugin=task/none constrains nothing), so the nvidia profile's --gres=gpu:N is accepted.
cat > "$BASE/etc/gres.conf" <<GRES
NodeName=$NODELIST Name=dcu Count=$DCU_COUNT Flags=CountOnly
NodeName=$NODELIST Name=gpu File=/dev/null,/dev/zero,/dev/full,/dev/urandom
GRES
echo "export SLURM_CONF=$CONF" > "$BASE/env.sh"

alive() {  # alive NAME: run/NAME.pid is a live /usr/sbin/<NAME without -suffix>
  local f=$BASE/run/$1.pid
  [[ -s $f ]] && [[ $(readlink -f "/proc/$(cat "$f")/exe" 2>/dev/null) == "$(readlink -f "/usr/sbin/${1%%-*}")" ]]
}
if ! cmp -s "$new_conf" "$CONF"; then
  mv "$new_conf" "$CONF"; chmod 644 "$CONF"
  if alive slurmctld; then log "configuration changed: restarting"; "$(dirname "$0")/stop-slurm.sh" >&2 || true; fi
  rm -rf "${BASE:?}/state"; mkdir -p "$BASE/state"   # saved node states of the old configuration
else
  rm -f "$new_conf"
fi
start() {  # start NAME ARGS...: detached, own session
  local name=$1; shift
  setsid "/usr/sbin/${name%%-*}" "$@" </dev/null >>"$BASE/log/$name.stdout" 2>&1 &
  echo $! > "$BASE/run/$name.pid"
}
wait_until() {  # wait_until SECONDS CMD...
  local end=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do (( $(date +%s) < end )) || return 1; sleep 0.3; done
}

# 3. daemons
if ! alive munged; then
  rm -f "$SOCK" "$SOCK.lock"
  start munged -F --socket="$SOCK" --key-file="$BASE/munge/munge.key" --pid-file="$BASE/munge/munged.pid" \
    --seed-file="$BASE/munge/munged.seed" --log-file="$BASE/log/munged.log"
  wait_until 15 bash -c "munge -n -S '$SOCK' | unmunge -S '$SOCK'" || die "munged did not start ($BASE/log)"
fi
alive slurmctld || start slurmctld -D -i -f "$CONF"
wait_until 30 bash -c "scontrol ping | grep -q 'is UP'" || die "slurmctld did not start ($BASE/log/slurmctld.log)"
for n in "${NODES[@]}"; do alive "slurmd-$n" || start "slurmd-$n" -D -f "$CONF" -N "$n"; done
for n in "${NODES[@]}"; do
  node_up() { scontrol -o show node "$1" | grep -Eq 'State=(IDLE|MIXED|ALLOCATED)[ +]'; }
  if ! wait_until 30 node_up "$n"; then
    scontrol update NodeName="$n" State=RESUME >/dev/null 2>&1 || true
    wait_until 30 node_up "$n" || die "node $n is not usable ($BASE/log/slurmd-$n.log)"
  fi
done
log "Slurm is up: ${NODES[*]} x $NODE_CPUS CPUs, gres dcu:$DCU_COUNT; source $BASE/env.sh"
