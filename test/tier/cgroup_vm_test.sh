#!/usr/bin/env bash
# test/tier/cgroup_vm_test.sh BUILD WORK [--tier-only]: the tier in a real cgroup v2 (issue 7), run by
# ci/tier-vm inside the soft-RoCE VM as root.
#
# Each case: a fresh cgroup (memory.max $MAX, memory.high $HIGH, no swap); in it
# farmem_bench_tier --mode far with a working set of 2 x memory.max in a far_vector (far
# memory: a farmem-memserver over tcp on the guest's loopback, outside the cgroup), budget
# $BUDGET; after the fill, a hog joins the cgroup and takes $HOG in 1 MiB steps every $HOG_STEP_MS ms,
# then holds it. The workload keeps running read-check-write passes over every element, at
# least $PASSES and until the hog holds all its bytes (at most $MAX_PASSES).
#   tier_survives_hog      the tier on (floor $FLOOR, ceiling $BUDGET): the workload exits 0
#                          with no wrong element, no OOM kill in the cgroup, the hog still
#                          alive, and the tier shrank the budget
#   fixed_budget_oom_killed  the same with the budget fixed at $BUDGET (above what the cgroup
#                          allows once the hog is in): the workload dies of SIGKILL and the
#                          cgroup's memory.events counts an oom_kill
# Results: "passed NAME" / "failed NAME" lines in WORK/results.txt (ci/test counts them), the
# workloads' JSON in WORK/*.json. Exit 0 when both passed.
set -uo pipefail
BUILD=${1:?usage: cgroup_vm_test.sh BUILD WORK}
WORK=${2:?usage: cgroup_vm_test.sh BUILD WORK}
tier_only=0; [[ ${3:-} != --tier-only ]] || tier_only=1   # bench/tier.sh: the pressure step only
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=vm_cgroup_lib.sh
source "$here/vm_cgroup_lib.sh"
trap lib_cleanup EXIT

# Sizes: small, because the VM emulates its CPUs (farmem moves ~1-2 MB/s there on a busy
# host) and CI has about five minutes for this and the quick benchmark. The cgroup holds
# ~5 MiB besides the cache (heap, stacks, socket buffers): budget 16 + 5 + hog 14 > 32 (max),
# so a fixed budget cannot survive the hog; the tier must go below ~28 x 0.9 - 14 - 5 = 6 MiB.
# memory.high (below max) is where the kernel throttles the cgroup instead of killing in it:
# the time the tier needs to write dirty pages back and give their frames up. The hog takes
# 1 MiB every $HOG_STEP_MS ms: the tier needs 1-4 s to give back ~10 MiB of dirty pages here
# (docs/benchmarks.md), and a hog taking its 14 MiB in 1 MiB steps every 20 ms got the workload
# OOM-killed in one of seven runs; at 50 ms a CI run on a fresh machine lost the same race
# (the budget cut to 8 MiB but 12 MiB still resident: the cgroup reached memory.high first,
# and above it the kernel throttles the evictor's write-back with the rest of the cgroup).
# Hence 100 ms: the tier gets ~0.5 s between the hog's start and memory.high, not 0.25 s.
# memory.high 8 MiB below max was no cure: the fixed-budget
# case then sat throttled above memory.high, never reached max, and died of its own 10 s
# far-memory timeouts (SIGABRT) instead of an OOM kill.
MAX=${FARMEM_TIER_TEST_MAX:-32M} HIGH=${FARMEM_TIER_TEST_HIGH:-28M}
ELEMENTS=${FARMEM_TIER_TEST_ELEMENTS:-8388608}   # 64 MiB of uint64: 2 x memory.max
BUDGET=${FARMEM_TIER_TEST_BUDGET:-16M} FLOOR=${FARMEM_TIER_TEST_FLOOR:-2M} HOG=${FARMEM_TIER_TEST_HOG:-14M}
PASSES=${FARMEM_TIER_TEST_PASSES:-1} INTERVAL_MS=${FARMEM_TIER_TEST_INTERVAL_MS:-50}
HOG_STEP_MS=${FARMEM_TIER_TEST_HOG_STEP_MS:-100}
# The workload runs its passes until the hog holds all of its bytes (at most MAX_PASSES): on
# an idle host a 64 MiB pass takes ~1 s, less than the hog's ramp, and a workload that had
# finished before the hog was in proved nothing (the fixed budget then survived, in one run).
MAX_PASSES=${FARMEM_TIER_TEST_MAX_PASSES:-20}
PAGE=${FARMEM_TIER_TEST_PAGE:-64K}   # the cache's page size: 16x fewer round trips than 4K
# tcp (default) or rdma: see docs/benchmarks.md "The tier in a real cgroup v2" for why not rdma
TRANSPORT=${FARMEM_TIER_TEST_TRANSPORT:-tcp}
mkdir -p "$WORK"
results=$WORK/results.txt
: >"$results"
bin=$BUILD/bench/farmem_bench_tier
verdict() {  # verdict NAME REASON...: passed when no reason is given
  local name=$1; shift
  if [[ $# -eq 0 ]]; then echo "passed $name" >>"$results"; echo "cgroup_vm_test: ok $name"
  else echo "failed $name" >>"$results"; echo "cgroup_vm_test: FAIL $name: $*"; fi
}
json_num() { sed -n "s/.*\"$2\":\([-0-9.e+]*\).*/\1/p" "$1" | tail -n1; }

# run_case NAME ARGS...: the workload with ARGS in cgroup NAME, the hog joining after the fill.
# Sets RC (the workload's exit status), HOG_ALIVE (1/0), OOM_KILLS, OUT (its stdout file).
run_case() {
  local name=$1; shift
  local ready=$WORK/$name.ready step=$WORK/$name.step held=$WORK/$name.held wpid hpid
  OUT=$WORK/$name.json
  rm -f "$ready" "$step" "$held"
  RC=-1 HOG_ALIVE=0 OOM_KILLS=-1
  : >"$OUT"
  cg_new "$name" "$MAX" "$HIGH" 0 || return
  echo "=== $name: memory.max $MAX, memory.high $HIGH, working set $((ELEMENTS * 8 >> 20)) MiB, $TRANSPORT, $*"
  local url=$MEMSERVER_URL
  [[ $TRANSPORT != rdma ]] || url=$MEMSERVER_RDMA_URL
  cg_exec "$name" "$bin" --mode far --server "$url" --token-file "$TOKEN_FILE" \
    --elements "$ELEMENTS" --passes "$PASSES" --budget "$BUDGET" --page-bytes "$PAGE" \
    --tier-interval-ms "$INTERVAL_MS" --ready-file "$ready" --step-file "$step" \
    --until-file "$held" --max-passes "$MAX_PASSES" "$@" \
    >"$OUT" 2>"$WORK/$name.err" &
  wpid=$!
  # the cgroup's memory every second, for the log
  (while kill -0 "$wpid" 2>/dev/null; do
     echo "$(date +%s) current $(($(cat "$CG/$name/memory.current") >> 20)) MiB" \
       "$(awk '$1 == "anon" || $1 == "file" || $1 == "kernel" { printf "%s %d MiB ", $1, $2 / 1048576 }' "$CG/$name/memory.stat")"
     sleep 1
   done) >"$WORK/$name.cgroup.log" 2>&1 &
  wait_until 900 bash -c '[[ -e $0 ]] || ! kill -0 $1 2>/dev/null' "$ready" "$wpid"
  hpid=""
  if [[ -e $ready ]]; then
    echo "$name: fill done after $(($(date +%s) - t_case)) s; the hog ($HOG) joins"
    cg_exec "$name" "$bin" --mode hog --bytes "$HOG" --chunk 1M --chunk-interval-ms "$HOG_STEP_MS" \
      --step-file "$step" --held-file "$held" >"$WORK/$name.hog.log" 2>&1 &
    hpid=$!
  fi
  RC=0
  timeout 1200 tail --pid="$wpid" -f /dev/null
  wait "$wpid" || RC=$?
  HOG_ALIVE=0
  if [[ -n $hpid ]] && kill -0 "$hpid" 2>/dev/null; then HOG_ALIVE=1; fi
  [[ -z $hpid ]] || { kill -9 "$hpid" 2>/dev/null; wait "$hpid" 2>/dev/null; }
  OOM_KILLS=$(cg_event "$name" oom_kill)
  echo "$name: workload exit $RC, hog alive $HOG_ALIVE, memory.events: $(tr '\n' ' ' <"$CG/$name/memory.events")"
  echo "$name: peak $(cat "$CG/$name/memory.peak" 2>/dev/null || echo '?') bytes"
  tail -n 3 "$WORK/$name.err"; tail -n 1 "$OUT"
}
# failed_case_log NAME: the whole of a failed case's progress (the workload's lines a second
# and the cgroup's memory a second), so that a failure in CI explains itself.
failed_case_log() {
  echo "--- $1: the workload's stderr"; cat "$WORK/$1.err"
  echo "--- $1: the cgroup's memory a second"; cat "$WORK/$1.cgroup.log"
  echo "--- $1: the hog"; cat "$WORK/$1.hog.log"
}

t0=$SECONDS
cg_setup || { verdict cgroup_v2_setup "no cgroup v2 memory controller"; exit 1; }
memserver_start 7472 1G || { verdict memserver_start "farmem-memserver did not start"; exit 1; }

t_case=$(date +%s)
run_case tier_survives_hog --floor "$FLOOR" --ceiling "$BUDGET"
why=()
[[ $RC -eq 0 ]] || why+=("workload exit $RC")
[[ $(json_num "$OUT" mismatches) == 0 ]] || why+=("mismatches $(json_num "$OUT" mismatches)")
[[ $OOM_KILLS == 0 ]] || why+=("oom_kill $OOM_KILLS")
[[ $HOG_ALIVE -eq 1 ]] || why+=("the hog did not survive")
[[ $(json_num "$OUT" shrinks) -gt 0 ]] 2>/dev/null || why+=("the tier never shrank")
verdict tier_survives_hog "${why[@]+"${why[@]}"}"
[[ ${#why[@]} -eq 0 ]] || failed_case_log tier_survives_hog

if [[ $tier_only -eq 1 ]]; then echo "cgroup_vm_test: $((SECONDS - t0)) s"; exit 0; fi
t_case=$(date +%s)
run_case fixed_budget_oom_killed
why=()
[[ $RC -eq 137 ]] || why+=("workload exit $RC, not 137 (SIGKILL)")
[[ ${OOM_KILLS:-0} -ge 1 ]] || why+=("memory.events oom_kill ${OOM_KILLS:-?}")
verdict fixed_budget_oom_killed "${why[@]+"${why[@]}"}"
[[ ${#why[@]} -eq 0 ]] || failed_case_log fixed_budget_oom_killed

echo "cgroup_vm_test: $((SECONDS - t0)) s"
! grep -q '^failed ' "$results"
