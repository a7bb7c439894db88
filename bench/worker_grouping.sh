#!/bin/bash
# Seeds per worker, side by side in one run: the gender cells of one target (donors -, es, de, hu) for seeds 0
# and 1 trained by one `cltm train-cells` process per seed, and by one process for both seeds
# (resources.seeds_per_job: 2); CPU seconds (user + sys) and wall from /usr/bin/time, two repeats; then
# checks that both ways wrote the same metrics (all but timing).
#
#     bash bench/worker_grouping.sh        # after a demo run (needs results/demo/ingest, resources/models)
#
# Measured on the shared 2-core machine (load 6-12, so wall is meaningless; CPU seconds hold): two processes
# 36.4 and 37.6 CPU s, one process 30.6 and 27.4 CPU s for the same 8 cells: ~6-10 CPU s per process
# avoided, the imports (torch 1.6, torch.use_deterministic_algorithms 1.2-1.4 (it imports torch's
# compiler stack), transformers' HuBERT 2.1, sklearn 1.1-1.5 CPU s); identical metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
export T
python - <<'PY'
import os
from pathlib import Path
import polars as pl
from cltm_pipeline.io import write_tsv
from cltm_pipeline.data.subsets import SubsetSpec, draw_seed, eval_sets
R, T = Path("results/demo"), Path(os.environ["T"])
spec = SubsetSpec(task="gender", languages=("es", "de", "hu"), n=16, seeds=(0, 1))
tables = {l: pl.read_parquet(R / "ingest" / l / "utterances.parquet") for l in spec.languages}
test, dev = eval_sets(spec, "es", tables["es"])
write_tsv(T / "test.tsv", test); write_tsv(T / "dev.tsv", dev)
for s in spec.seeds:
    write_tsv(T / f"seed{s}.tsv", draw_seed(spec, "es", s, tables, test, dev))
PY
HP=$(python -c "import yaml, json; h = yaml.safe_load(open('config/config.yaml'))['tasks']['gender']['architectures']['mhubert']['hparams']; h['probe_clips'] = 0; print(json.dumps(h, separators=(',', ':')))")
common=(--task gender --arch mhubert --model-dir resources/models/mhubert-tiny --test "$T/test.tsv" --dev "$T/dev.tsv"
        --ingest-root results/demo/ingest --target es --donors - es de hu --hparams "$HP" --threads 1)
for rep in 1 2; do
  for s in 0 1; do
    /usr/bin/time -f "one process per seed, seed $s, repeat $rep: wall %e s, CPU %U + %S s" \
      cltm train-cells "${common[@]}" --seed-tables "$T/seed$s.tsv" --seeds $s --runs-dir "$T/a$rep" --flag "$T/a$rep.$s.done" > /dev/null
  done
  /usr/bin/time -f "one process for seeds 0 and 1, repeat $rep: wall %e s, CPU %U + %S s" \
    cltm train-cells "${common[@]}" --seed-tables "$T/seed0.tsv" "$T/seed1.tsv" --seeds 0 1 --runs-dir "$T/b$rep" --flag "$T/b$rep.done" > /dev/null
done
python - <<'PY'
import json, os
from pathlib import Path
T = Path(os.environ["T"])
for p in sorted((T / "a1").rglob("metrics.json")):
    a, b = json.loads(p.read_text()), json.loads((T / "b1" / p.relative_to(T / "a1")).read_text())
    a.pop("timing"), b.pop("timing")
    print(p.relative_to(T / "a1"), "same" if a == b else "DIFFERENT")
PY
