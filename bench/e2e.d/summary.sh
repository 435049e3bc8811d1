# bench/e2e.d/summary.sh RUN_DIR RUN QUICK: bench/e2e's summary. stdout: one JSON object
# (every point without its raw report, with "normalised": its throughput over its place's
# all-local run; "ratios": the targets); stderr: the ratios, one a line; also
# RUN_DIR/plot-APP.dat (columns: local %, farmem-verbs, farmem-tcp, kernel-swap-nvmeof,
# kernel-swap-brd, normalised; NaN where missing) for plot.sh. bash and awk only.
set -uo pipefail
R=${1:?} run=${2:?} quick=${3:?}
files=$(ls "$R"/*.json 2>/dev/null | grep -vE '/(e2e|summary)\.json$')
[[ -n $files ]] || { echo "summary: no points in $R" >&2; exit 1; }
# shellcheck disable=SC2086
awk -v run="$run" -v quick="$quick" -v dir="$R" -v date="$(date -u +%Y-%m-%dT%H:%M:%SZ)" '
  function field(s, k,   r) {
    if (!match(s, "\"" k "\": (\"[^\"]*\"|[-+0-9.eE]+|null|true|false)")) return ""
    r = substr(s, RSTART + length(k) + 4, RLENGTH - length(k) - 4); gsub(/"/, "", r); return r
  }
  function isnum(v) { return v ~ /^[-+]?[0-9.]+([eE][-+]?[0-9]+)?$/ }
  function place(sys) { return (sys == "farmem-tcp" || sys == "all-local-native") ? "native" : "vm" }
  function ratio(a, b) { return (isnum(a) && isnum(b) && b + 0 > 0) ? sprintf("%.3f", a / b) : "null" }
  {
    i = index($0, ", \"raw\": "); head = (i ? substr($0, 1, i - 1) : substr($0, 1, length($0) - 1))
    n++; line[n] = head
    app = field(head, "app"); sys = field(head, "system"); fr = field(head, "fraction")
    tp = field(head, "throughput"); st = field(head, "status")
    a[n] = app; s[n] = sys; f[n] = fr; t[n] = tp; stat[n] = st
    p50[n] = field(head, "p50_us"); p99[n] = field(head, "p99_us")
    if (sys ~ /^all-local/ && st == "ok") ref[app, place(sys)] = tp
    apps[app] = 1
    if (fr != "null") { fracs[fr] = 1; tput[app, sys, fr] = tp; status[app, sys, fr] = st }
  }
  function target(name, app, fr, num_sys, den_sys, op, goal,   v, why) {
    if (den_sys == "local") v = ratio(tput[app, num_sys, fr], ref[app, "vm"])
    else v = ratio(tput[app, num_sys, fr], tput[app, den_sys, fr])
    why = ""
    if (v == "null") {
      if (status[app, num_sys, fr] != "ok") why = num_sys " " (status[app, num_sys, fr] == "" ? "not run" : status[app, num_sys, fr])
      else if (den_sys != "local" && status[app, den_sys, fr] != "ok")
        why = den_sys " " (status[app, den_sys, fr] == "" ? "not run" : status[app, den_sys, fr])
      else why = "missing"
    }
    if (goal == "")
      printf "e2e: %-38s %7s  (no target)%s\n", name, v, (why == "" ? "" : ": " why) > "/dev/stderr"
    else
      printf "e2e: %-38s %7s  (target %s %s)%s%s\n", name, v, op, goal,
        (v == "null" ? "" : ((op == ">=" ? v + 0 >= goal : v + 0 <= goal) ? ": met" : ": NOT met")),
        (why == "" ? "" : ": " why) > "/dev/stderr"
    rat = rat (rat == "" ? "" : ", ") "\"" name "\": " v
    if (why != "") rat = rat ", \"" name "_why\": \"" why "\""
  }
  END {
    printf "{\"run\": \"%s\", \"quick\": %s, \"date\": \"%s\", \"points\": [", run, (quick == 1 ? "true" : "false"), date
    for (k = 1; k <= n; k++) {
      nm = (s[k] ~ /^all-local/) ? "1.000" : ratio(t[k], ref[a[k], place(s[k])])
      printf "%s\n  %s, \"normalised\": %s}", (k > 1 ? "," : ""), line[k], nm
      norm[a[k], s[k], f[k]] = nm
    }
    rat = ""
    target("kv_ycsb_b_25_verbs_vs_all_local", "kv", "0.25", "farmem-verbs", "local", ">=", 0.8)
    target("kv_ycsb_b_25_verbs_vs_kernel_swap", "kv", "0.25", "farmem-verbs", "kernel-swap-nvmeof", ">=", 3)
    target("pagerank_25_verbs_vs_kernel_swap", "graph", "0.25", "farmem-verbs", "kernel-swap-nvmeof", ">=", 2)
    target("sort_25_verbs_vs_kernel_swap", "sort", "0.25", "farmem-verbs", "kernel-swap-nvmeof", ">=", 1.5)
    # beside them, not targets: the same against the brd floor, and kv latency
    target("kv_25_verbs_vs_kernel_swap_brd", "kv", "0.25", "farmem-verbs", "kernel-swap-brd", ">=", "")
    target("pagerank_25_verbs_vs_kernel_swap_brd", "graph", "0.25", "farmem-verbs", "kernel-swap-brd", ">=", "")
    target("sort_25_verbs_vs_kernel_swap_brd", "sort", "0.25", "farmem-verbs", "kernel-swap-brd", ">=", "")
    printf "\n], \"ratios\": {%s}}\n", rat
    for (k = 1; k <= n; k++) if (a[k] == "kv")
      printf "e2e: kv %-18s %5s: %s ops/s (%s), p50 %s us, p99 %s us\n", s[k],
        (f[k] == "null" ? "all" : f[k] * 100 "%"), (isnum(t[k]) ? sprintf("%.0f", t[k]) : t[k]),
        norm[a[k], s[k], f[k]] " of all-local", p50[k], p99[k] > "/dev/stderr"
    nsys = split("farmem-verbs farmem-tcp kernel-swap-nvmeof kernel-swap-brd", sy, " ")
    for (app in apps) {
      out = dir "/plot-" app ".dat"
      printf "# local%%" > out
      for (j = 1; j <= nsys; j++) printf " %s", sy[j] > out
      printf "\n" > out
      m = 0; for (fr in fracs) fl[++m] = fr + 0
      for (x = 1; x <= m; x++) for (y = x + 1; y <= m; y++) if (fl[y] < fl[x]) { tmp = fl[x]; fl[x] = fl[y]; fl[y] = tmp }
      for (x = 1; x <= m; x++) {
        fr = ""; for (g in fracs) if (g + 0 == fl[x]) fr = g
        printf "%g", fl[x] * 100 > out
        for (j = 1; j <= nsys; j++) {
          v = norm[app, sy[j], fr]; printf " %s", (isnum(v) ? v : "NaN") > out
        }
        printf "\n" > out
      }
      close(out)
    }
  }' $files
