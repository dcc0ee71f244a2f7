#!/usr/bin/env bash
# Every benchmark once on a lent GPU machine, inside 8 minutes; the tables come back as
# NAME_<gpu>_gpu.md / .json (e.g. mlp_h200_gpu.md) for `nnjax bench --merge-only` to merge.
#
#   bash benchmarks/accelerator.sh [OUT_DIR]      # default: benchmarks/results
#
# On the device tool's machine ($OUT set) the tables and logs are also packed into
# $OUT/gpu_tables.tgz (the tool returns at most 8 files): unpack it into benchmarks/results here.
#
# Each benchmark runs in its own process with its own deadline, most important first; one that
# fails or runs out of time is reported and the rest go on. PyTorch peers move to CUDA when JAX's
# backend is a GPU (benchmarks/harness.py), so the rows compare the same card.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-benchmarks/results}
PYTHON=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-470}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 KERAS_BACKEND=jax
mkdir -p "$OUT_DIR"
"$PYTHON" - <<'PY' || { echo "accelerator.sh: JAX sees no GPU here; nothing run." >&2; exit 2; }
import jax, sys
print("jax", jax.__version__, jax.devices())
sys.exit(0 if jax.default_backend() == "gpu" else 1)
PY
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
tag=$(echo "$gpu" | grep -oiE '[A-Z][0-9]{2,4}' | head -1 | tr 'A-Z' 'a-z')
tag=${tag:-gpu}
tables=$(mktemp -d)
start=$(date +%s)
# name:seconds it may take (compile-heavy ones last); --quick where the full run is longer than its slot
for item in mlp:40 cluster:40 lstm:60 bert:60 mobilenet:80 mnist:90 finetune:150; do
    name=${item%%:*}; slot=${item##*:}
    left=$(( BUDGET_S - ($(date +%s) - start) ))
    if (( left < 20 )); then echo "== $name skipped: ${left}s of the budget left"; continue; fi
    (( slot > left )) && slot=$left
    echo "== $name (deadline ${slot}s)"
    timeout "$slot" "$PYTHON" -m "benchmarks.bench_$name" --out "$tables" > "$tables/$name.log" 2>&1
    echo "   exit $? after $(( $(date +%s) - start ))s total; last lines:"; tail -3 "$tables/$name.log"
done
for table in "$tables"/*.md; do
    [ -e "$table" ] || continue
    base=$(basename "$table" .md)
    cp "$table" "$OUT_DIR/${base}_${tag}_gpu.md"
    [ -e "$tables/$base.json" ] && cp "$tables/$base.json" "$OUT_DIR/${base}_${tag}_gpu.json"
done
ls -1 "$OUT_DIR" | grep "_${tag}_gpu" || echo "accelerator.sh: no table was written" >&2
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
    (cd "$OUT_DIR" && tar -czf "$OUT/gpu_tables.tgz" $(ls | grep "_${tag}_gpu") -C "$tables" $(cd "$tables" && ls *.log))
    echo "packed into $OUT/gpu_tables.tgz"
fi
