#!/usr/bin/env bash
# `make run`: the vault on its embedded defaults, and two local agents
# registered to it: a primary host over a few generated demo VMs, so that a
# newcomer sees a connected host with VMs at once, and an empty recovery
# host in a second site to test failover and fail over to. Ctrl-C stops all.
set -euo pipefail

DATA_DIR=${DATA_DIR:-${LIFEBOAT_DATA_DIR:-./data}}
LISTEN=${LISTEN:-${LIFEBOAT_LISTEN:-127.0.0.1:8443}}
BIN=${BIN:-bin}
VM_ROOT="$DATA_DIR/demo/vms"
AGENT_DIR="$DATA_DIR/demo/agent"
RECOVERY_ROOT="$DATA_DIR/demo/recovery-vms"
RECOVERY_DIR="$DATA_DIR/demo/recovery-agent"

# Demo VMs: raw disks as sparse files with some data in them (filedisk
# driver conventions: a directory per VM, *.img disks, vm.json for the id).
make_vm() {
  local name=$1 id=$2 size_mib=$3
  local dir="$VM_ROOT/$name"
  [ -d "$dir" ] && return
  mkdir -p "$dir"
  printf '{"id": "%s"}\n' "$id" > "$dir/vm.json"
  truncate -s "${size_mib}M" "$dir/disk0.img"
  dd if=/dev/urandom of="$dir/disk0.img" bs=1M count=4 seek=1 conv=notrunc status=none
  dd if=/dev/urandom of="$dir/disk0.img" bs=1M count=2 seek=$((size_mib / 2)) conv=notrunc status=none
}
mkdir -p "$VM_ROOT"
make_vm web demo-web-01 128
make_vm db demo-db-01 256
make_vm files demo-files-01 64
truncate -s 32M "$VM_ROOT/db/disk1.img" 2>/dev/null || true
touch "$VM_ROOT/web/running"

pids=()
cleanup() {
  trap - EXIT INT TERM
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$BIN/lifeboat-vault" --data-dir "$DATA_DIR" --listen "$LISTEN" &
pids+=($!)

# The vault listens once its database is ready.
host=${LISTEN%:*} port=${LISTEN##*:}
for _ in $(seq 1 60); do
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || exit 1
  sleep 0.5
done

# register_agent STATE_DIR SITE NAME registers a demo agent once.
register_agent() {
  local dir=$1 site=$2 name=$3 key="$DATA_DIR/demo/$3.key.json"
  [ -f "$dir/identity.json" ] && return
  "$BIN/lifeboat-vault" registration-key --data-dir "$DATA_DIR" --listen "$LISTEN" \
    --site "$site" --create-site --out "$key" >/dev/null
  for attempt in $(seq 1 30); do
    if "$BIN/lifeboat-agent" register --key-file "$key" --state-dir "$dir" \
         --name "$name" >/dev/null 2>"$DATA_DIR/demo/register.err"; then
      echo "Registered demo agent $name in site \"$site\" (state in $dir)."
      break
    fi
    if ! grep -q "reach the vault" "$DATA_DIR/demo/register.err"; then
      cat "$DATA_DIR/demo/register.err" >&2
      exit 1
    fi
    sleep 1
  done
  rm -f "$key"
}
register_agent "$AGENT_DIR" "Local demo" "$(hostname)-demo"
register_agent "$RECOVERY_DIR" "Recovery site" "$(hostname)-recovery"
mkdir -p "$RECOVERY_ROOT"

"$BIN/lifeboat-agent" run --state-dir "$AGENT_DIR" --vm-root "$VM_ROOT" --log-level warn &
pids+=($!)
"$BIN/lifeboat-agent" run --state-dir "$RECOVERY_DIR" --vm-root "$RECOVERY_ROOT" --log-level warn &
pids+=($!)
echo "Demo agent runs over $VM_ROOT (add a directory with a .img file there to see a new VM)."
echo "Recovery agent runs over $RECOVERY_ROOT: test failovers and failovers to it make VMs there."
wait -n "${pids[@]}"
