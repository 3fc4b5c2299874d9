#!/usr/bin/env bash
# Accelerator benchmark: ntkdsl against neural-tangents 0.6.5 on the machine's default
# jax backend (a GPU when jax has one; the peer's venv needs a GPU jaxlib too).
#
#   benchmarks/gpu.sh [--quick] [OUT.md]
#
# Runs, side by side in fresh processes (benchmarks/bench_speed.py):
#   * the peer's README case: one NTK entry of a 21-layer 3x3 CNN on 32x32x3, GAP and
#     Flatten readouts, float32 and float64 (the peer quotes these on a V100);
#   * the analytic benchmark cases a-e (e = Myrtle-10 on 32x32x3), float64 and float32;
#   * the empirical NTK rows (FC 3 x 2048 on 256 inputs, CNN on 64 images);
#   * a sweep of the chunk size (kernels.ACCEL_CHUNK_ENTRIES) on cases b, d and e, to set
#     it from a measurement.
# and writes the tables (markdown) to OUT.md (default benchmarks/gpu-results.md), headed
# by the device's name. --quick: one rep, two cases, a short sweep: proves the script
# runs (on a CPU too) in a few minutes; its numbers mean nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PEER=${PEER_PYTHON:-.peer-venv/bin/python}
QUICK=0
OUT=benchmarks/gpu-results.md
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    *) OUT=$a ;;
  esac
done
if [ "$QUICK" = 1 ]; then
  REPS=1; CASES=ab; SWEEP=14,18; CHUNK_CASES=b; EMP=cnn
else
  REPS=5; CASES=abcde; SWEEP=16,18,20,22,24,26; CHUNK_CASES=bde; EMP=fc,cnn
fi
TMP=$(mktemp)
{
  echo "# ntkdsl on $("$PY" -c 'import jax; d = jax.devices()[0]; print(d.platform, d.device_kind)')"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), host $(hostname), load $(cut -d' ' -f1-3 /proc/loadavg)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader | sed 's/^/GPU: /' || echo "no nvidia-smi: not a GPU machine"
  echo
  "$PY" benchmarks/bench_speed.py --rows cnn21 --reps "$REPS" --peer "$PEER"
  "$PY" benchmarks/bench_speed.py --rows analytic,float32,empirical --cases "$CASES" \
    --empirical "$EMP" --reps "$REPS" --peer "$PEER"
  "$PY" benchmarks/bench_speed.py --rows chunks --cases "$CHUNK_CASES" \
    --chunk-exponents "$SWEEP" --reps "$REPS" --peer "$PEER"
} | tee "$TMP"
mv "$TMP" "$OUT"
echo "written: $OUT"
