#!/usr/bin/env bash
# Every GPU check and benchmark of xpnn in one call (about 6-7 minutes on one H100):
#   1. the GPU, CuPy and CUDA versions;
#   2. the test suite with the gpu tests included (they must run: a gpu skip fails this script);
#      the gpu cases run both ways a layer computes there: the array code and the fused CUDA
#      kernels (backend/cuda.py);
#   3. run.py parity (NumPy against CuPy, layer by layer) for every config, both ways;
#   4. training-step time of lenet and resnet at batch 100 and 1000, ours (both ways) against
#      PyTorch CUDA, with the host time to queue a step; a per-layer profile of resnet;
#   5. resnet trained for 5 epochs on the GPU, both ways: test accuracy and wall time.
# Writes the full log and the run folder under $OUT (default: ./gpu_check_out) and prints a short
# table last. Usage, from the repository root:  bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
SUMMARY="$OUT/summary.md"
export PYTHONUNBUFFERED=1
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
status=0

{
echo "== 1. device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python - <<'PY'
import cupy
props = cupy.cuda.runtime.getDeviceProperties(0)
print("GPU:", props["name"].decode(), "| CuPy", cupy.__version__,
      "| CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(),
      "| driver", cupy.cuda.runtime.driverGetVersion())
PY
} 2>&1 | tee "$LOG"
say "device: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"

echo "== 2. tests, gpu included" | tee -a "$LOG"
python -m pytest -q -rs tests 2>&1 | tee "$OUT/pytest.log" >> "$LOG"
tail -3 "$OUT/pytest.log"
if grep -E "SKIPPED.*(no usable GPU|CuPy)" "$OUT/pytest.log" >/dev/null; then
    say "tests: FAIL (gpu tests skipped on a GPU machine)"; status=1
elif grep -E "[0-9]+ failed" "$OUT/pytest.log" >/dev/null; then
    say "tests: FAIL ($(tail -1 "$OUT/pytest.log"))"; status=1
else
    say "tests: $(tail -1 "$OUT/pytest.log")"
fi

echo "== 3. parity NumPy vs CuPy" | tee -a "$LOG"
for fused in 0 1; do
    for config in configs/*.yaml; do
        name="$(basename "$config" .yaml) (fused kernels $fused)"
        echo "-- $name" >> "$LOG"
        if XPNN_FUSED_KERNELS=$fused python run.py parity -c "$config" --device-a cpu --dtype-a float32 \
                --device-b gpu >> "$LOG" 2>&1; then
            say "parity $name: ok (<= 1e-4)"
        else
            say "parity $name: FAIL (see log)"; status=1
        fi
    done
done
grep -E "worst|max" "$LOG" | tail -12

echo "== 4. step time, ours vs PyTorch CUDA" | tee -a "$LOG"
python -m benchmarks.gpu_vs_torch --device gpu --configs lenet,resnet --batch-sizes 100,1000 \
    --variants array,fused --rounds 2 --json "$OUT/bench.json" 2>&1 | tee -a "$LOG" | tail -7 \
    | tee -a "$SUMMARY"
for fused in 0 1; do
    echo "-- profile, fused kernels $fused" >> "$LOG"
    XPNN_FUSED_KERNELS=$fused python run.py bench -c configs/resnet.yaml --device gpu \
        --batch-size 1000 --profile >> "$LOG" 2>&1
done

echo "== 5. resnet, 5 epochs on the GPU" | tee -a "$LOG"
for fused in 1 0; do
    start=$(date +%s)
    XPNN_FUSED_KERNELS=$fused python run.py train -c configs/resnet.yaml --device gpu \
        --output "$OUT/resnet_gpu_fused$fused" --no-progress 2>&1 | tee -a "$LOG" | tail -7
    say "resnet 5 epochs on GPU, fused kernels $fused: $(python - "$OUT/resnet_gpu_fused$fused" <<'PY'
import sys
from xpnn.training.metrics import best_epoch, read_metrics
try:
    records = read_metrics(sys.argv[1])
    chosen = best_epoch(records)
    print(f"test accuracy {100 * records[-1]['test_acc']:.2f}% after epoch {records[-1]['epoch']}"
          f" ({100 * chosen['test_acc']:.2f}% at epoch {chosen['epoch']}, chosen on validation),"
          f" {sum(r['seconds'] for r in records):.0f} s in epochs")
except Exception as error:
    print(f"FAILED ({error})")
PY
), wall $(( $(date +%s) - start )) s"
done

echo
echo "== summary"
cat "$SUMMARY"
exit $status
