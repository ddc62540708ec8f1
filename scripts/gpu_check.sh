#!/usr/bin/env bash
# Every GPU check and benchmark of xpnn in one call (planned for under 8 minutes on one H100):
#   1. the GPU, CuPy, CUDA, nvmath-python and PyTorch versions;
#   2. the gpu-marked tests (a gpu skip fails this script; CI runs the others);
#   3. run.py parity, NumPy against CuPy, the six networks of the write-up (the recipes reuse
#      them), four ways: array code and fused kernels, eager (--eager) and with the CUDA-graph
#      step's GEMM (the default; target <= 1e-4);
#   4. training-step time, lenet and resnet at batch 100 and 1000: ours eager (array code,
#      fused kernels) and as one CUDA graph (GEMM by cuBLAS through nvmath-python; with the
#      fused kernels, the default), against PyTorch CUDA eager and PyTorch with its own CUDA
#      graph; kernel launches per step counted by nsys where it is installed;
#   5. resnet trained for 5 epochs on the GPU, as one CUDA graph per step (the default) and
#      eagerly: test accuracy and time; lenet one epoch (600 steps of 100: target < 1 s of steps);
#   4b. device time per kernel per step, ours and PyTorch's (benchmarks/kernel_table.py);
#   6. the short table, last.
# Writes the full log and run folders under $OUT (default: ./gpu_check_out).
# Usage, from the repository root:  bash scripts/gpu_check.sh [--dry-run]
#   --dry-run: every step on the CPU at toy sizes, graph variants left out (what can run
#   without a GPU), so a typo cannot cost a device run; a few minutes on 2 cores.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
# The lent machines' python3 is a virtualenv's interpreter and there is no `python`.
PYTHON=${PYTHON:-python3}
python() { "$PYTHON" "$@"; }
# A checkout that is not installed (the lent machine reaches no package registry): install it
# editable, offline, with no dependency, built by a setuptools wheel carried in .whl/ (the
# machine's may be older than pyproject.toml needs).
if ! python -c "import xpnn.backend" 2>/dev/null; then
    BUILD=""
    if ls .whl/setuptools-*.whl >/dev/null 2>&1; then
        python -m pip install -q --no-index --no-deps --target /tmp/xpnn_build \
            .whl/setuptools-*.whl && BUILD=/tmp/xpnn_build
    fi
    PYTHONPATH=$BUILD${PYTHONPATH:+:$PYTHONPATH} python -m pip install -q --no-deps \
        --no-build-isolation --no-index -e . || { echo "xpnn does not install here"; exit 1; }
fi
# nvmath-python (the capturable cuBLAS GEMM of the CUDA-graph step) travels as a wheel in .whl/
# where the machine lacks it: `pip download --no-deps --only-binary=:all: --python-version 3.12
# --platform manylinux_2_28_x86_64 -d .whl nvmath-python==1.0.0 'setuptools>=77,<81'`.
if ls .whl/nvmath_python-*.whl >/dev/null 2>&1 && ! python -c "import nvmath" 2>/dev/null; then
    python -m pip install -q --no-index --no-deps --no-compile --target /tmp/xpnn_site \
        .whl/nvmath_python-*.whl && export PYTHONPATH=/tmp/xpnn_site${PYTHONPATH:+:$PYTHONPATH}
fi
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
if [ $DRY = 1 ]; then
    DEVICE=cpu; TESTS="tests/test_graphs.py tests/test_matmul.py tests/test_gpu_setup.py"
    BENCH="--batch-sizes 4 --rounds 1 --steps 1 --warmup 0"; CONFIGS=configs/lenet.yaml
    RESNET="--epochs 1 --limit-train 200 --limit-test 100"; LENET="--limit-train 200 --limit-test 100"
    TORCH_SIDES=eager; KERNELS="--device cpu --configs lenet --batch-sizes 4 --steps 1 --top 4"
else
    DEVICE=gpu; TESTS=tests  # the graph is the GPU default
    BENCH="--batch-sizes 100,1000 --rounds 2 --steps 20 --warmup 5"
    CONFIGS="configs/lenet.yaml configs/resnet.yaml configs/resnet_3blocks.yaml configs/resnet_deep.yaml configs/resnet_leaky.yaml configs/resnet_stem.yaml"
    RESNET=""; LENET=""
    TORCH_SIDES=eager,graph; KERNELS="--configs resnet --batch-sizes 100,1000 --steps 10"
fi
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
python - "$DEVICE" <<'PY'
import importlib.metadata as meta
import sys
def version(name):
    try:
        return meta.version(name)
    except meta.PackageNotFoundError:
        return "not installed"
print("nvmath-python", version("nvmath-python"),
      "| torch", version("torch"))
if sys.argv[1] != "cpu":
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(0)
    print("GPU:", props["name"].decode(), "| CuPy", cupy.__version__,
          "| CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(),
          "| driver", cupy.cuda.runtime.driverGetVersion())
PY
} 2>&1 | tee "$LOG"
if [ $DRY = 1 ]; then say "device: none (dry run on the CPU)"
else say "device: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"; fi

echo "== 2. tests, gpu included" | tee -a "$LOG"
# The gpu-marked tests on their own, so that any skip among them fails the check (a GPU machine
# must run every one); then the rest. pytest-xdist spreads them over the cores where installed.
PARALLEL=""; python -c "import xdist" 2>/dev/null && PARALLEL="-n 8"
# On a GPU machine only the gpu-marked tests run: the rest are the CPU's, and CI runs them.
PARTS=(gpu); [ $DRY = 1 ] && PARTS=(gpu "not gpu")
for part in "${PARTS[@]}"; do
    # shellcheck disable=SC2086  # TESTS is a list of paths, PARALLEL options
    python -m pytest -q -rs -m "$part" $PARALLEL $TESTS > "$OUT/pytest-${part// /-}.log" 2>&1
    cat "$OUT/pytest-${part// /-}.log" >> "$LOG"
    last=$(tail -1 "$OUT/pytest-${part// /-}.log")
    echo "$part: $last"
    if grep -E "[0-9]+ (failed|error)" <<<"$last" >/dev/null; then
        say "tests ($part): FAIL ($last)"; status=1
    elif [ $DRY = 0 ] && [ "$part" = gpu ] && grep -E "[0-9]+ skipped" <<<"$last" >/dev/null; then
        say "tests ($part): FAIL (gpu tests skipped on a GPU machine: $last)"; status=1
    else
        say "tests ($part): $last"
    fi
done

echo "== 3. parity NumPy vs CuPy" | tee -a "$LOG"
for way in array fused graph graph-fused; do
    case $way in
        array) flags="--array-code --eager" ;;
        fused) flags="--eager" ;;
        graph) flags="--array-code" ;;
        graph-fused) flags="" ;;
    esac
    for config in $CONFIGS; do
        name="$(basename "$config" .yaml) ($way)"
        echo "-- $name" >> "$LOG"
        # shellcheck disable=SC2086  # flags are words
        if python run.py parity -c "$config" --device-a cpu --dtype-a float32 \
                --device-b $DEVICE $flags >> "$LOG" 2>&1; then
            say "parity $name: ok (<= 1e-4)"
        else
            say "parity $name: FAIL (see log)"; status=1
        fi
    done
done

if [ $DRY = 0 ]; then  # the tensor-core precisions, each against its own tolerance
    for precision in tf32 bf16; do
        if python run.py parity -c configs/resnet.yaml --device-a cpu --dtype-a float32 \
                --device-b gpu --precision $precision --json > "$OUT/parity-$precision.json" \
                2>> "$LOG"; then verdict=ok; else verdict=FAIL; status=1; fi
        say "parity resnet (precision $precision): $verdict ($(python -c "import json, sys
r = json.load(open(sys.argv[1])); w = r['worst']
print(f\"worst {w['max_rel_err']:.2e} at {w['name']} ({w['kind']}), tolerance {r['tolerance']:g}\")" \
            "$OUT/parity-$precision.json" 2>&1))"
    done
fi

echo "== 4. step time, ours vs PyTorch eager and PyTorch CUDA graph" | tee -a "$LOG"
# shellcheck disable=SC2086  # BENCH is options
python -m benchmarks.gpu_vs_torch --device $DEVICE --configs lenet,resnet,resnet_deep $BENCH \
    --variants array,fused,graph,graph-fused --torch $TORCH_SIDES \
    --json "$OUT/bench.json" 2>&1 | tee -a "$LOG" > "$OUT/bench.txt"
if [ "${PIPESTATUS[0]}" != 0 ]; then say "benchmark: FAIL (see log)"; status=1; fi
if [ $DRY = 0 ]; then  # PyTorch's fastest, torch.compile + one CUDA graph: resnet only (compiling costs)
    python -m benchmarks.gpu_vs_torch --device gpu --configs resnet $BENCH --rounds 1 \
        --variants graph-fused --torch compiled --json "$OUT/bench-compiled.json" 2>&1 \
        | tee -a "$LOG" > "$OUT/bench-compiled.txt"
fi
if command -v nsys >/dev/null && [ $DRY = 0 ]; then
    for way in eager cuda-graph; do  # 200 steps: build, warm-up and capture are noise
        flag=--eager; [ $way = cuda-graph ] && flag=""
        # shellcheck disable=SC2086
        nsys profile --cuda-graph-trace=node -o "$OUT/resnet-$way" --force-overwrite true \
            "$PYTHON" run.py bench -c configs/resnet.yaml --device gpu --batch-size 100 \
            --steps 200 --warmup 3 $flag >> "$LOG" 2>&1
        kernels=$(nsys stats -q --report cuda_gpu_kern_sum --format csv \
            "$OUT/resnet-$way.nsys-rep" 2>/dev/null | python -c "import csv, sys
print(sum(int(row['Instances']) for row in csv.DictReader(sys.stdin)))")
        say "resnet batch 100, $way: ${kernels:-?} kernels in 203-205 steps (nsys; /200 per step)"
    done
else
    say "kernel launches per step: not counted (nsys not installed)"
fi

echo "== 4b. device time per kernel, ours and PyTorch's (CUPTI through torch.profiler)" | tee -a "$LOG"
# shellcheck disable=SC2086  # KERNELS is options
python -m benchmarks.kernel_table $KERNELS > "$OUT/kernels.md" 2>> "$LOG" \
    || { say "kernel table: FAIL (see log)"; status=1; }
cat "$OUT/kernels.md" >> "$LOG"

echo "== 5. training runs" | tee -a "$LOG"
read_run() {
    python - "$1" <<'PY'
import sys
from xpnn.training.metrics import best_epoch, read_metrics
try:
    records = read_metrics(sys.argv[1])
    chosen = best_epoch(records)
    seconds = ", ".join(f"{record['seconds']:.1f}" for record in records)
    elapsed, reached = 0.0, "not reached"
    for record in records:  # time to 99% test accuracy: epochs' seconds (evaluation included)
        elapsed += record["seconds"]
        if record["test_acc"] >= 0.99:
            reached = f"{elapsed:.1f} s (epoch {record['epoch']})"
            break
    print(f"test accuracy {100 * records[-1]['test_acc']:.2f}% after epoch {records[-1]['epoch']}"
          f" ({100 * chosen['test_acc']:.2f}% at epoch {chosen['epoch']}, chosen on validation),"
          f" epochs took {seconds} s, 99% test accuracy after {reached}")
except Exception as error:
    print(f"FAILED ({error})")
PY
}
# The first run compiles every kernel (an empty CuPy kernel cache, as on a fresh machine); the
# second finds them cached (and the GPU probe remembered). Wall time includes the interpreter's
# start and the imports.
CACHE=$(mktemp -d)
for way in graph-fresh graph eager; do
    flag=--eager; [ $way != eager ] && flag=""
    start=$(date +%s%N)
    # shellcheck disable=SC2086
    CUPY_CACHE_DIR=$CACHE/cupy XDG_CACHE_HOME=$CACHE python run.py train -c configs/resnet.yaml \
        --device $DEVICE $flag $RESNET --output "$OUT/resnet_$way" --no-progress 2>&1 \
        | tee -a "$LOG" | tail -3
    wall=$(( ($(date +%s%N) - start) / 1000000 ))
    say "resnet (5 epochs unless a dry run), $way: $(read_run "$OUT/resnet_$way"), wall $((wall / 1000)).$(( wall % 1000 / 100 )) s"
done
rm -rf "$CACHE"
if [ $DRY = 0 ]; then  # tensor-core precisions: resnet's accuracy against fp32's (within 0.1 point)
    for precision in tf32 bf16; do
        start=$(date +%s%N)
        python run.py train -c configs/resnet.yaml --device gpu --precision $precision \
            --output "$OUT/resnet_$precision" --no-progress >> "$LOG" 2>&1
        wall=$(( ($(date +%s%N) - start) / 1000000 ))
        say "resnet 5 epochs, precision $precision: $(read_run "$OUT/resnet_$precision"), wall $((wall / 1000)).$(( wall % 1000 / 100 )) s"
    done
fi
# shellcheck disable=SC2086
python run.py train -c configs/lenet.yaml --device $DEVICE --epochs 1 --batch-size 100 \
    $LENET --output "$OUT/lenet_graph" --no-progress >> "$LOG" 2>&1
say "lenet 1 epoch at batch 100 ($DEVICE default mode): $(read_run "$OUT/lenet_graph") (evaluation included)"
python - "$OUT/bench.json" <<'PY' | tee -a "$SUMMARY"
import json, sys
rows = json.load(open(sys.argv[1]))
for row in rows:
    if row["config"] == "lenet" and row["batch"] == 100:
        for key in ("ours_graph-fused_ms", "ours_array_ms"):
            if key in row:
                print(f"lenet 600 steps of 100 ({key[5:-3]}): {600 * row[key] / 1e3:.2f} s of "
                      f"step time (target < 1 s)")
PY

echo
echo "== summary"
cat "$SUMMARY"
echo
first=$(grep -n '^| config' "$OUT/bench.txt" | head -1 | cut -d: -f1)
if [ -n "$first" ]; then tail -n +"$first" "$OUT/bench.txt"; else echo "(no step-time table: see the log)"; fi
exit $status
