# Guest-side helpers for the tier's cgroup test and benchmark (sourced by
# test/tier/cgroup_vm_test.sh and bench/tier.sh, which ci/tier-vm runs in the soft-RoCE VM as
# root). bash; needs FARMEM_IN_VM=1.
#
#   cg_setup                      cgroup v2 at /sys/fs/cgroup with +memory for its children
#   cg_new NAME MAX HIGH SWAPMAX  a fresh child cgroup with these memory.max/high/swap.max
#   cg_exec NAME CMD...           CMD in cgroup NAME (its shell joins first, then execs)
#   cg_event NAME KEY             a memory.events counter (oom_kill, oom, max, high)
#   memserver_start PORT CAPACITY farmem-memserver on tcp 127.0.0.1:PORT and rdma
#                                 10.99.0.1:PORT+1, outside every test cgroup; sets
#                                 MEMSERVER_URL (tcp), MEMSERVER_RDMA_URL and TOKEN_FILE
#   nvmeof_swap_on                an nvmet subsystem on /dev/ram0 over rdma (10.99.0.1:4420),
#                                 connected through nvme-rdma, swapped to; sets SWAP_DEV

[[ ${FARMEM_IN_VM:-} == 1 ]] || { echo "vm_cgroup_lib: for ci/tier-vm's guest only" >&2; exit 2; }
CG=/sys/fs/cgroup
LIB_PIDS=()

cg_setup() {
  if ! grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts; then
    mount -t cgroup2 cgroup2 "$CG" || { echo "cannot mount cgroup2"; return 1; }
  fi
  grep -qw memory "$CG/cgroup.controllers" || { echo "no memory controller in cgroup v2"; return 1; }
  echo +memory >"$CG/cgroup.subtree_control"
}

cg_new() {
  local d=$CG/$1
  if [[ -d $d ]]; then   # left from an earlier run in this boot: empty it first
    echo 1 >"$d/cgroup.kill" 2>/dev/null
    wait_until 10 bash -c '[[ ! -s $0/cgroup.procs ]]' "$d"
    rmdir "$d" || return 1
  fi
  mkdir "$d" || return 1
  echo "$2" >"$d/memory.max" && echo "$3" >"$d/memory.high" && echo "$4" >"$d/memory.swap.max"
}

cg_exec() {
  local name=$1; shift
  bash -c 'echo $$ >"$0" && exec "$@"' "$CG/$name/cgroup.procs" "$@"
}

cg_event() { awk -v k="$2" '$1 == k { print $2 }' "$CG/$1/memory.events"; }

# wait_until SECONDS CHECK...: poll CHECK every 0.1 s
wait_until() {
  local deadline=$((SECONDS + $1)); shift
  while ((SECONDS < deadline)); do "$@" && return 0; sleep 0.1; done
  "$@"
}

memserver_start() {
  local port=$1 cap=$2 log=$WORK/memserver.log
  TOKEN_FILE=$WORK/token
  (umask 077; od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$TOKEN_FILE")
  "$BUILD/memserver/farmem-memserver" --tcp "127.0.0.1:$port" --rdma "10.99.0.1:$((port + 1))" \
    --capacity "$cap" --token-file "$TOKEN_FILE" >"$log" 2>&1 &
  LIB_PIDS+=($!)
  MEMSERVER_URL=tcp://127.0.0.1:$port MEMSERVER_RDMA_URL=rdma://10.99.0.1:$((port + 1))
  wait_until 60 bash -c 'grep -q "^listening tcp " "$0" && grep -q "^listening rdma " "$0"' "$log" ||
    { echo "memserver did not start"; cat "$log"; return 1; }
}

nvmeof_swap_on() {
  local n=/sys/kernel/config/nvmet nqn=farmem-swap
  [[ -b /dev/ram0 && -d $n ]] || { echo "no /dev/ram0 or nvmet (ci/rxe-vm --nvmeof)"; return 1; }
  mkdir "$n/subsystems/$nqn" "$n/subsystems/$nqn/namespaces/1" "$n/ports/1" || return 1
  echo 1 >"$n/subsystems/$nqn/attr_allow_any_host"
  echo -n /dev/ram0 >"$n/subsystems/$nqn/namespaces/1/device_path"
  echo 1 >"$n/subsystems/$nqn/namespaces/1/enable"
  echo rdma >"$n/ports/1/addr_trtype"; echo ipv4 >"$n/ports/1/addr_adrfam"
  echo 10.99.0.1 >"$n/ports/1/addr_traddr"; echo 4420 >"$n/ports/1/addr_trsvcid"
  ln -s "$n/subsystems/$nqn" "$n/ports/1/subsystems/$nqn"
  echo "transport=rdma,traddr=10.99.0.1,trsvcid=4420,nqn=$nqn" >/dev/nvme-fabrics || return 1
  SWAP_DEV=""
  # the namespace's block device (with native multipath, nvme0c0n1 is a hidden path of it)
  nvme_disk() { ls /sys/block 2>/dev/null | grep -E '^nvme[0-9]+n1$' | head -n1; }
  wait_until 30 bash -c "$(declare -f nvme_disk); [[ -n \$(nvme_disk) ]]" ||
    { echo "no NVMe namespace appeared"; ls /sys/block; return 1; }
  SWAP_DEV=/dev/$(nvme_disk)
  wait_until 10 test -b "$SWAP_DEV" || { echo "$SWAP_DEV is not a block device"; return 1; }
  mkswap "$SWAP_DEV" >/dev/null && swapon "$SWAP_DEV" || return 1
  echo "swap on $SWAP_DEV (nvme-rdma over rxe -> nvmet -> /dev/ram0): $(grep -E "^$SWAP_DEV" /proc/swaps)"
}

lib_cleanup() {
  [[ -n ${SWAP_DEV:-} ]] && swapoff "$SWAP_DEV" 2>/dev/null
  local p
  for p in "${LIB_PIDS[@]+"${LIB_PIDS[@]}"}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  return 0
}
