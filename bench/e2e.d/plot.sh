# bench/e2e.d/plot.sh RUN_DIR OUT_DIR: one plot an app from RUN_DIR/plot-APP.dat (summary.sh):
# throughput normalised to all-local against the local-memory fraction, a line a system;
# OUT_DIR/e2e-APP.png and .svg. Needs gnuplot (ci/install-deps vm: gnuplot-nox).
set -uo pipefail
R=${1:?} out=${2:?}
command -v gnuplot >/dev/null || { echo "plot: no gnuplot (ci/install-deps vm)" >&2; exit 1; }
mkdir -p "$out"
rc=0
for dat in "$R"/plot-*.dat; do
  [[ -s $dat ]] || continue
  app=${dat##*/plot-}; app=${app%.dat}
  case $app in
    kv) title="farmem-kv, YCSB-B (Zipf 0.99), ops/s" ;;
    sort) title="farmem-sort (generate + sort + verify), records/s" ;;
    graph) title="farmem-graph PageRank, edges/s" ;;
    *) title=$app ;;
  esac
  for fmt in png svg; do
    if [[ $fmt == png ]]; then term="pngcairo size 760,560 font 'sans,11'"; else term="svg size 760,560 dynamic font 'sans,11'"; fi
    gnuplot 2>"$R/gnuplot.err" <<GP || { rc=1; cat "$R/gnuplot.err" >&2; }
set terminal $term
set output "$out/e2e-$app.$fmt"
set title "$title\nthroughput / all-local (same place), against local memory"
set xlabel "local memory, % of the working set"
set ylabel "throughput / all-local"
set logscale x 2
set xrange [10:110]
set xtics ("12.5" 12.5, "25" 25, "50" 50, "100" 100)
set yrange [0:*]
set key below horizontal
set arrow from 10,1 to 110,1 nohead dt 3 lc rgb "gray40"
set grid
set datafile missing "NaN"
plot "$dat" using 1:2 with linespoints lw 2 pt 7 title "farmem-verbs", \
     "" using 1:3 with linespoints lw 2 pt 5 title "farmem-tcp", \
     "" using 1:4 with linespoints lw 2 pt 9 title "kernel-swap-nvmeof", \
     "" using 1:5 with linespoints lw 2 dt 2 pt 13 title "kernel-swap-brd"
GP
    grep -v -e 'Skipping data file with no valid points' -e '^ *$' "$R/gnuplot.err" >&2
  done
  rm -f "$R/gnuplot.err"
  echo "e2e: plot $out/e2e-$app.png, .svg" >&2
done
exit "$rc"
