# bench/e2e.d/vm.sh: bench/e2e's points in the soft-RoCE VM (run by bench/e2e --in-vm, as
# root in ci/rxe-vm's guest, booted with --nvmeof). bash, sourced by bench/e2e.
# In one boot: a farmem-memserver on rdma 10.99.0.1 (outside every cgroup); per app the
# all-local run (plain memory, no limit), then farmem over verbs at each fraction; then the
# plain program under kernel swap at each fraction, first to /dev/ram0 directly (brd, no
# network: the floor), then to the same RAM disk as an NVMe-oF namespace over rxe
# (nvme-rdma -> nvmet -> brd). Each run has a cgroup of its own; a swap run's memory.max is
# the farmem budget plus the program's own fixed memory (see BASE below).
# Needs: BUILD QUICK FORCE DONE POINTS APPS GRAPH_BIN (see lib.sh), E2E_SWAP_EXACT.
WORK=/tmp/e2e/work
mkdir -p "$WORK" "$POINTS"
# shellcheck source=../../test/tier/vm_cgroup_lib.sh
source "$E2E_ROOT/test/tier/vm_cgroup_lib.sh"
trap lib_cleanup EXIT
vm_rc=0
cg_setup || exit 1
memserver_start 7600 "${E2E_MEMSERVER_CAPACITY:-1G}" || exit 1
FAR_ARGS=(--server "$MEMSERVER_RDMA_URL" --token-file "$TOKEN_FILE")
log "in the VM: memserver $MEMSERVER_RDMA_URL; apps: $(apps_wanted | tr '\n' ' ')"

# vm_point APP SYSTEM FRACTION MODE MEMORY_MAX SWAP_MAX
vm_point() {
  local app=$1 sys=$2 frac=$3 mode=$4 max=$5 swap=$6 name t0 wall oom peak status
  if point_done "$app" "$sys" "$frac"; then log "$app-$sys-$(pct "$frac"): done before, skipped"; return; fi
  name=e2e_${app}_${sys//-/_}_$(pct "$frac" | tr . _)
  cg_new "$name" "$max" max "$swap" || { log "cannot make cgroup $name"; vm_rc=1; return; }
  log "$app-$sys-$(pct "$frac"): running (memory.max $max, swap.max $swap)"
  t0=$(date +%s.%N)
  CG_NAME=$name "${app}_run" "$mode" "$frac" "$WORK/$name"
  wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  oom=$(cg_event "$name" oom_kill) peak=$(cat "$CG/$name/memory.peak" 2>/dev/null)
  status=$RUN_STATUS
  if [[ $status != ok && ${oom:-0} -gt 0 ]]; then status=oom RUN_NOTE="OOM-killed at memory.max $max"; fi
  RUN_NOTE="${RUN_NOTE:+$RUN_NOTE; }memory.stat: $(awk '$1 ~ /^(pgmajfault|pswpin|pswpout)$/ { printf "%s %s ", $1, $2 }' "$CG/$name/memory.stat" 2>/dev/null)"
  [[ $max == max ]] && max=""
  write_point "$app" "$sys" "$frac" "$status" "$WORK/$name.json" "$wall" "$max" "$peak" "$oom" "$RUN_NOTE"
  say_point "$app" "$sys" "$frac" "$status" "$wall"
  [[ $status == ok || ($sys == kernel-swap-* && ($status == oom || $status == timeout)) ]] || vm_rc=1
}

# base_bytes APP: memory.peak of the plain program on a tiny input: what it needs besides its
# data (binary, libraries, threads, farmem-kv's runtime). Added to a swap run's memory.max
# so that the kernel gets the farmem budget for the data itself (farmem's own process is not
# limited at all). E2E_SWAP_EXACT=1: 0, memory.max is the budget alone.
base_bytes() {
  [[ ${E2E_SWAP_EXACT:-0} == 1 ]] && { echo 0; return; }
  local app=$1 name=e2e_base_$1
  local KV_KEYS=64 KV_SECONDS=0.3 KV_WARMUP=0 SORT_RECORDS=1024 GRAPH_SCALE=6 GRAPH_ITERS=1
  local GRAPH_SUM=""
  cg_new "$name" max max 0 >/dev/null || { echo 0; return; }
  CG_NAME=$name "${app}_run" plain all "$WORK/$name" >&2
  cat "$CG/$name/memory.peak" 2>/dev/null || echo 0
}

declare -A BASE
for app in $(apps_wanted); do
  vm_point "$app" all-local-vm all plain max 0
  if [[ $app == graph ]]; then
    [[ -s $POINTS/graph-all-local-vm-all.json ]] && graph_reference "$POINTS/graph-all-local-vm-all.json"
    [[ -z ${GRAPH_WS:-} && -s $DONE/graph-all-local-vm-all.json ]] && graph_reference "$DONE/graph-all-local-vm-all.json"
    [[ -n ${GRAPH_WS:-} ]] || { log "graph: no all-local run, no working set: skipped"; vm_rc=1; continue; }
  fi
  for f in $FRACTIONS; do vm_point "$app" farmem-verbs "$f" far max 0; done
  BASE[$app]=$(base_bytes "$app")
  log "$app: the plain program's own memory (tiny input): ${BASE[$app]} bytes"
done

# swap_points SYSTEM: every app's plain program at every fraction under the swap now on
swap_points() {
  local app f b
  for app in $(apps_wanted); do
    [[ $app != graph || -n ${GRAPH_WS:-} ]] || continue
    for f in $FRACTIONS; do
      b=$(( $(budget_bytes "$app" "$f") + ${BASE[$app]:-0} ))
      vm_point "$app" "$1" "$f" plain "$b" max
    done
  done
}

if mkswap /dev/ram0 >/dev/null && swapon /dev/ram0; then
  log "swap on /dev/ram0 (brd, no network)"
  swap_points kernel-swap-brd
  swapoff /dev/ram0 || { log "swapoff /dev/ram0 failed"; vm_rc=1; }
else
  log "cannot swap to /dev/ram0"; vm_rc=1
fi
if nvmeof_swap_on >&2; then
  swap_points kernel-swap-nvmeof
else
  log "cannot set up swap over NVMe-oF"; vm_rc=1
fi
exit "$vm_rc"
