#!/usr/bin/env bash
# The paper dry-run (`snakemake -n --configfile config/paper.yaml`), side by side: the commit BASE (exported to a
# temporary directory) and this working tree, alternately, RUNS times each. Per run: wall time, CPU time (user +
# system: less sensitive than wall time to other processes on a shared machine) and peak RSS; then the import time
# of what the Snakefile imports, and whether both plan the same jobs (the per-rule job table).
# Usage: bench/dry_run.sh BASE [RUNS]   (from the repo root; snakemake and python from PATH or .venv)
set -euo pipefail
base=${1:?usage: bench/dry_run.sh BASE [RUNS]}
runs=${2:-3}
here=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/base"
git archive "$base" | tar -x -C "$tmp/base"
export HF_HUB_OFFLINE=1
one() {  # one() LABEL TREE RUN: a dry-run from TREE with its own package, timed
  (cd "$2" && PYTHONPATH="$2/src" /usr/bin/time -f "%e %M %U %S" -o "$tmp/$1.$3.time" \
    snakemake -n --configfile config/paper.yaml --quiet rules > "$tmp/$1.$3.out" 2>&1)
  sed -n '/^Job stats:/,/^total/p' "$tmp/$1.$3.out" > "$tmp/$1.$3.jobs"
  read -r wall rss user sys < "$tmp/$1.$3.time"
  printf '%-5s run %s: %6.2f s wall  %6.2f s CPU  %5d MB peak RSS  (load %s)\n' "$1" "$3" "$wall" \
    "$(echo "$user + $sys" | bc)" "$((rss / 1024))" "$(cut -d' ' -f1-3 /proc/loadavg)"
}
imports() {  # the import time of what workflow/rules/common.smk imports, and whether torch came with it
  (cd "$2" && PYTHONPATH="$2/src" python -c "import sys, time; t = time.perf_counter()
import cltm_pipeline.config, cltm_pipeline.workflow, cltm_pipeline.tasks, cltm_pipeline.models
print(f'$1 Snakefile imports: {time.perf_counter() - t:.2f} s, torch loaded: {\"torch\" in sys.modules}')")
}
echo "paper dry-run, $runs runs each, alternating; $(nproc) cores"
imports base "$tmp/base"
imports new "$here"
for i in $(seq 1 "$runs"); do
  one base "$tmp/base" "$i"
  one new "$here" "$i"
done
if cmp -s "$tmp/base.1.jobs" "$tmp/new.1.jobs"; then
  echo "same jobs planned: $(grep '^total' "$tmp/new.1.jobs" | tail -1)"
else
  echo "the job tables differ:"; diff "$tmp/base.1.jobs" "$tmp/new.1.jobs" || true
fi
