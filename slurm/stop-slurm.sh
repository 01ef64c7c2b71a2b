#!/usr/bin/env bash
# Stop what start-slurm.sh started, by the pids it saved (never by name); cancel jobs first.
set -uo pipefail
BASE=${TLF_SLURM_DIR:-/tmp/tlf-slurm}
export SLURM_CONF=$BASE/etc/slurm.conf
pid_of() {
  local f=$BASE/run/$1.pid
  [[ -s $f ]] && [[ $(readlink -f "/proc/$(cat "$f")/exe" 2>/dev/null) == "$(readlink -f "/usr/sbin/${1%%-*}")" ]] && cat "$f"
}
if pid_of slurmctld >/dev/null; then
  ids=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
  [[ -n ${ids// /} ]] && scancel $ids 2>/dev/null
  for _ in $(seq 1 50); do [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break; sleep 0.2; done
fi
names=()
for f in "$BASE"/run/slurmd-*.pid; do
  [[ -e $f ]] || continue
  n=$(basename "$f" .pid); [[ $n == *.daemon ]] || names+=("$n")
done
for name in "${names[@]}" slurmctld munged; do
  pid=$(pid_of "$name") || continue
  kill -TERM "$pid"
  for _ in $(seq 1 100); do pid_of "$name" >/dev/null || break; sleep 0.2; done
  pid_of "$name" >/dev/null && kill -KILL "$pid"
  rm -f "$BASE/run/$name.pid"
  echo "[stop-slurm] stopped $name ($pid)" >&2
done
