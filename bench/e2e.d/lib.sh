# bench/e2e's point runners, sourced by bench/e2e on the host and by bench/e2e.d/vm.sh in the
# soft-RoCE VM. bash. A point is one (app, system, fraction) run; its result is one JSON
# line in POINTS/APP-SYSTEM-PCT.json (see bench/e2e's header for the fields).
#
# Callers set: BUILD (absolute build folder), QUICK (0/1), POINTS (folder for new point
# files), DONE (folder of finished points to skip, may equal POINTS), FORCE (0/1),
# GRAPH_BIN (farmem-graph, may be missing), and before a far point FAR_ARGS (--server URL
# --token-file FILE). In the VM, CG_NAME names the cgroup a point's program runs in.

# ---- sizes ---------------------------------------------------------------------------------
# Full: working sets a TCG guest on 2 cores gets through in about 20 minutes for every point;
# quick: a few MiB, outputs checked, not speed. E2E_* variables override each.
if [[ $QUICK == 1 ]]; then
  FRACTIONS=${E2E_FRACTIONS:-0.25}
  KV_KEYS=${E2E_KV_KEYS:-8192} KV_SECONDS=${E2E_KV_SECONDS:-2} KV_WARMUP=${E2E_KV_WARMUP:-0.5}
  SORT_RECORDS=${E2E_SORT_RECORDS:-160000}
  GRAPH_SCALE=${E2E_GRAPH_SCALE:-15} GRAPH_ITERS=${E2E_GRAPH_ITERS:-5}
  POINT_TIMEOUT=${E2E_POINT_TIMEOUT:-90}
else
  FRACTIONS=${E2E_FRACTIONS:-1 0.5 0.25 0.125}
  KV_KEYS=${E2E_KV_KEYS:-32768} KV_SECONDS=${E2E_KV_SECONDS:-5} KV_WARMUP=${E2E_KV_WARMUP:-1}
  SORT_RECORDS=${E2E_SORT_RECORDS:-400000}
  GRAPH_SCALE=${E2E_GRAPH_SCALE:-17} GRAPH_ITERS=${E2E_GRAPH_ITERS:-10}
  POINT_TIMEOUT=${E2E_POINT_TIMEOUT:-300}
fi
# KV values: 2000 bytes, so key + value take one 2 KiB heap object (no rounding waste); the
# working set is the items' far bytes, keys x 2 KiB.
KV_VALUE=2000 KV_ITEM=2048
# The memcached load: YCSB-B (95 % gets), scrambled Zipf 0.99, 2 threads x 4 connections,
# 4 requests in flight on each.
KV_LOAD=(-w B -d zipf --zipf-theta 0.99 -t 2 -c 8 -p 4 --progress 0)
THREADS=2

log() { echo "e2e: $*" >&2; }

# working_set APP: bytes of the app's working set (graph: the kernel's bytes, known once an
# all-local run of the same graph reported them; empty before)
working_set() {
  case $1 in
    kv) echo $((KV_KEYS * KV_ITEM)) ;;
    sort) echo $((SORT_RECORDS * 100)) ;;
    graph) [[ -n ${GRAPH_WS:-} ]] && echo "$GRAPH_WS" ;;
  esac
}

# pct FRACTION: 0.125 -> 12.5, 0.25 -> 25, 1 -> 100
pct() { [[ $1 == all ]] && { echo all; return; }; awk -v f="$1" 'BEGIN { printf "%g", f * 100 }'; }
# budget_bytes APP FRACTION: fraction x working set, at least 1 MiB; for kv whole MiB (its
# -m, as memcached's); sort and graph take bytes (--budget)
budget_bytes() {
  local ws; ws=$(working_set "$1")
  awk -v ws="$ws" -v f="$2" -v app="$1" 'BEGIN {
    b = int(ws * f); mib = 1048576
    if (app == "kv") { b = int(b / mib + 0.5) * mib }
    if (b < mib) b = mib
    printf "%d", b }'
}

# jval FILE KEY: the first "KEY": value in FILE (number, true/false, or a string without its
# quotes), the file flattened first (farmem-graph prints over several lines)
jval() {
  tr '\n' ' ' <"$1" 2>/dev/null | awk -v k="$2" '{
    if (!match($0, "\"" k "\"[ \t]*:[ \t]*(\"[^\"]*\"|[-+0-9.eE]+|true|false|null)")) exit 1
    v = substr($0, RSTART, RLENGTH); sub(/^"[^"]*"[ \t]*:[ \t]*/, "", v); gsub(/"/, "", v)
    print v }'
}
num_or_null() { [[ $1 =~ ^[-+]?[0-9.]+([eE][-+]?[0-9]+)?$ ]] && echo "$1" || echo null; }

point_file() { echo "$POINTS/$1-$2-$(pct "$3").json"; }
point_done() {  # APP SYSTEM FRACTION: a finished point exists and --force was not given
  [[ $FORCE == 1 ]] && return 1
  [[ -s $DONE/$1-$2-$(pct "$3").json ]]
}

# write_point APP SYSTEM FRACTION STATUS RAWFILE WALL_S [MEMMAX PEAK OOM CHECK_NOTE]: the
# point's JSON line, from the app's own JSON in RAWFILE
write_point() {
  local app=$1 sys=$2 frac=$3 status=$4 raw=$5 wall=$6 memmax=${7:-} peak=${8:-} oom=${9:-}
  local note=${10:-} tput="" unit="" p50="" p99="" secs="" rawline="null" ws budget
  ws=$(working_set "$app"); budget=$(budget_bytes "$app" "$frac")
  [[ -n $ws ]] || ws=$(jval "$raw" kernel_bytes)   # graph's all-local run reports it
  if [[ -s $raw ]] && tr '\n' ' ' <"$raw" | grep -q '^ *{.*} *$'; then
    rawline=$(tr '\n' ' ' <"$raw" | sed 's/  */ /g')
  fi
  if [[ $status == ok ]]; then
    case $app in
      kv) tput=$(jval "$raw" ops_per_sec); unit=ops_per_s
          secs=$(awk -v n="$(jval "$raw" ops)" -v r="$tput" 'BEGIN { if (r > 0) printf "%.3f", n / r }')
          p50=$(jval "$raw" p50); p99=$(jval "$raw" p99) ;;
      sort) unit=records_per_s
            secs=$(awk -v g="$(jval "$raw" gen_s)" -v s="$(jval "$raw" sort_s)" \
                     -v v="$(jval "$raw" verify_s)" 'BEGIN { printf "%.3f", g + s + v }')
            tput=$(awk -v n="$SORT_RECORDS" -v s="$secs" 'BEGIN { if (s > 0) printf "%.1f", n / s }') ;;
      graph) tput=$(jval "$raw" edges_per_second); unit=edges_per_s; secs=$(jval "$raw" seconds) ;;
    esac
  fi
  [[ $sys == all-local* ]] && budget=null
  printf '{"app": "%s", "system": "%s", "fraction": %s, "working_set_bytes": %s, "budget_bytes": %s, "memory_max_bytes": %s, "status": "%s", "throughput": %s, "throughput_unit": "%s", "p50_us": %s, "p99_us": %s, "seconds": %s, "wall_s": %s, "memory_peak_bytes": %s, "oom_kill": %s, "note": "%s", "raw": %s}\n' \
    "$app" "$sys" "$( [[ $sys == all-local* ]] && echo null || echo "$frac")" "$(num_or_null "$ws")" \
    "$(num_or_null "$budget")" "$(num_or_null "$memmax")" "$status" "$(num_or_null "$tput")" "$unit" \
    "$(num_or_null "$p50")" "$(num_or_null "$p99")" "$(num_or_null "$secs")" "$(num_or_null "$wall")" \
    "$(num_or_null "$peak")" "$(num_or_null "$oom")" "$note" "$rawline" >"$(point_file "$app" "$sys" "$frac")"
}

# ---- running one program -------------------------------------------------------------------
# launch CMD...: CMD in the background, in cgroup CG_NAME when set (its shell joins, then
# execs: $! is the program itself)
launch() {
  if [[ -n ${CG_NAME:-} ]]; then
    bash -c 'echo $$ >"$0" && exec "$@"' "/sys/fs/cgroup/$CG_NAME/cgroup.procs" "$@" &
  else
    "$@" &
  fi
}
# run_fg LOGBASE CMD...: CMD (in CG_NAME) with the point time limit; stdout to LOGBASE.out,
# stderr to LOGBASE.err; returns its status (124: time limit)
run_fg() {
  local base=$1; shift
  launch timeout -k 5 "$POINT_TIMEOUT" "$@" >"$base.out" 2>"$base.err"
  wait $!
}
free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 30000))
    [[ -z $(ss -Hltn "sport = :$p" 2>/dev/null) ]] && { echo "$p"; return; }
  done
  echo 29999
}
wait_log() {  # SECONDS PID FILE PATTERN: PATTERN appears in FILE while PID lives
  local deadline=$((SECONDS + $1)) pid=$2
  while ((SECONDS < deadline)); do
    grep -q "$4" "$3" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

# ---- the apps ------------------------------------------------------------------------------
# Each: app_run MODE FRACTION LOGBASE -> status in RUN_STATUS (ok / failed / timeout) and the
# app's JSON in LOGBASE.json; RUN_NOTE says what was wrong. MODE: far (FAR_ARGS) or plain.

kv_run() {
  local mode=$1 frac=$2 base=$3 port pid rc=0 args=()
  port=$(free_port)
  local cap=$(( 2 * $(working_set kv) + (64 << 20) ))
  if [[ $mode == far ]]; then
    args=(-m $(( $(budget_bytes kv "$frac") >> 20 )) --far-capacity "$cap" "${FAR_ARGS[@]}")
  else
    args=(--plain --far-capacity "$cap")
  fi
  launch "$BUILD/apps/farmem-kv" -p "$port" -t "$THREADS" "${args[@]}" >"$base.server" 2>&1
  pid=$!
  if ! wait_log 60 "$pid" "$base.server" "listening on"; then
    RUN_STATUS=failed RUN_NOTE="farmem-kv did not start"; kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    return
  fi
  timeout -k 5 "$POINT_TIMEOUT" "$BUILD/bench/farmem-kvload" -s "127.0.0.1:$port" "${KV_LOAD[@]}" \
    -k "$KV_KEYS" -v "$KV_VALUE" --duration "$KV_SECONDS" --warmup "$KV_WARMUP" \
    >"$base.json" 2>"$base.err" || rc=$?
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  RUN_NOTE=""
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then RUN_STATUS=timeout
  elif [[ $rc -ne 0 ]]; then RUN_STATUS=failed RUN_NOTE="farmem-kvload exit $rc"
  elif [[ $(jval "$base.json" wrong) != 0 ]]; then RUN_STATUS=failed RUN_NOTE="wrong values"
  elif [[ $(jval "$base.json" errors) != 0 ]]; then RUN_STATUS=failed RUN_NOTE="server errors"
  else RUN_STATUS=ok RUN_NOTE="wrong 0, hit_ratio $(jval "$base.json" hit_ratio)"; fi
}

sort_run() {
  local mode=$1 frac=$2 base=$3 rc=0 args=()
  # All-local: the budget (which also sizes the runs) of the 100 % point
  local b; b=$(budget_bytes sort "$([[ $frac == all ]] && echo 1 || echo "$frac")")
  [[ $mode == far ]] && args=("${FAR_ARGS[@]}")
  run_fg "$base" "$BUILD/apps/farmem-sort" --mode "$mode" --records "$SORT_RECORDS" \
    --budget "$b" -t "$THREADS" "${args[@]}" || rc=$?
  tail -n 1 "$base.out" >"$base.json"
  RUN_NOTE=""
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then RUN_STATUS=timeout
  elif [[ $rc -ne 0 ]]; then RUN_STATUS=failed RUN_NOTE="farmem-sort exit $rc"
  elif [[ $(jval "$base.json" sorted) != true || $(jval "$base.json" checksum_match) != true ]]; then
    RUN_STATUS=failed RUN_NOTE="output not sorted or not the input's records"
  else RUN_STATUS=ok RUN_NOTE="sorted, checksum_match"; fi
}

graph_run() {
  local mode=$1 frac=$2 base=$3 rc=0 args=()
  if [[ $mode == far ]]; then
    args=(--mode far --budget "$(budget_bytes graph "$frac")" "${FAR_ARGS[@]}")
  else
    args=(--mode local)
  fi
  run_fg "$base" "$GRAPH_BIN" "${args[@]}" -a pagerank --scale "$GRAPH_SCALE" --permute \
    --iterations "$GRAPH_ITERS" --tolerance 0 -t "$THREADS" || rc=$?
  cp "$base.out" "$base.json"
  RUN_NOTE=""
  local sum; sum=$(jval "$base.json" checksum)
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then RUN_STATUS=timeout
  elif [[ $rc -ne 0 ]]; then RUN_STATUS=failed RUN_NOTE="farmem-graph exit $rc"
  elif [[ -z $sum ]]; then RUN_STATUS=failed RUN_NOTE="no checksum"
  elif [[ -n ${GRAPH_SUM:-} && $sum != "$GRAPH_SUM" ]]; then
    RUN_STATUS=failed RUN_NOTE="checksum $sum differs from all-local's $GRAPH_SUM"
  else RUN_STATUS=ok RUN_NOTE="checksum $sum"; fi
}

# graph_reference POINTFILE: GRAPH_WS and GRAPH_SUM from an all-local point's raw report
graph_reference() {
  local tmp; tmp=$(mktemp)
  awk '{ i = index($0, "\"raw\": "); if (i) print substr($0, i + 7) }' "$1" >"$tmp"
  GRAPH_WS=$(jval "$tmp" kernel_bytes) GRAPH_SUM=$(jval "$tmp" checksum)
  rm -f "$tmp"
}

# apps_present: the apps whose binaries exist (graph only once farmem-graph is built)
apps_wanted() {
  local a
  for a in ${APPS//,/ }; do
    if [[ $a == graph && ! -x $GRAPH_BIN ]]; then
      log "graph: $GRAPH_BIN is not built: its points are skipped" ; continue
    fi
    echo "$a"
  done
}

# progress: one line a point
say_point() {  # APP SYSTEM FRACTION STATUS WALL [REF_TPUT]
  local f=$1-$2-$(pct "$3") tput unit
  tput=$(awk '{ if (match($0, /"throughput": [-0-9.e+]+/)) printf "%.0f", substr($0, RSTART + 14, RLENGTH - 14) }' "$(point_file "$1" "$2" "$3")")
  unit=$(sed -n 's/.*"throughput_unit": "\([^"]*\)".*/\1/p' "$(point_file "$1" "$2" "$3")")
  log "$f: $4 in ${5}s${tput:+, $tput ${unit//_/ }}${RUN_NOTE:+ ($RUN_NOTE)}"
}
