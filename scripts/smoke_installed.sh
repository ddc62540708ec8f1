#!/usr/bin/env bash
# xpnn as a user gets it: `pip install ".[onnx,mpi]"` (a built wheel, not the checkout) into a fresh
# venv, then every command of the installed `xpnn`, run from a folder outside the checkout.
# CI runs this after the tests; it needs the package registries, not a GPU.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
"$work/venv/bin/python" -m pip install --quiet "$repo[onnx,mpi]"
export PATH="$work/venv/bin:$PATH"
cd "$work"

step() { echo "-- $*"; }
step "installed where: $(python -c 'import xpnn; print(xpnn.__file__)')"
python -c 'import xpnn; assert "/site-packages/" in xpnn.__file__, xpnn.__file__'
step "$(xpnn --version) / $(python -m xpnn --version)"
xpnn describe -c resnet | tail -1
xpnn describe -c resnet --shapes | tail -2 | head -1
xpnn train -c lenet --epochs 1 --limit-train 10000 --limit-test 500 --no-progress -o run
xpnn evaluate run --limit-test 500 | sed -n 2p
python -c 'import xpnn; h = xpnn.fit("lenet", epochs=1, limit_train=2000, limit_test=500, run_dir="fit", progress=False, echo=None); print("-- xpnn.fit:", h[-1]["test_acc"])'
xpnn evaluate run --limit-test 500 --json -o report.json > /dev/null
python -c 'import json; report = json.load(open("report.json")); assert report["images"] == 500; print("-- evaluate --json:", report["accuracy"])'
test "$(wc -l < run/metrics.csv)" -eq 2
xpnn plot run --confusion | tail -1
images="$(python -c 'import pathlib, xpnn.data as d; print(pathlib.Path(d.__file__).parent / "mnist" / "t10k-images-idx3-ubyte.gz")')"
xpnn predict run "$images" -o predictions.csv | tail -2
test "$(wc -l < predictions.csv)" -eq 10001
xpnn export run -o model.onnx
python - <<'PY'
import csv
import numpy, onnxruntime
from xpnn.data import load_dataset
test = load_dataset("mnist")
session = onnxruntime.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
logits, _ = session.run(None, {"images": test.test_images.astype(numpy.float32) / 255})
ours = numpy.array([int(row["class"]) for row in csv.DictReader(open("predictions.csv"))])
agree = float((logits.argmax(axis=1) == ours).mean())
accuracy = float((logits.argmax(axis=1) == test.test_labels).mean())
print(f"-- the exported model in onnxruntime: {100 * accuracy:.2f}% of the test set, the same "
      f"class as xpnn predict for {100 * agree:.2f}% of the images")
assert agree > 0.999
PY
mpiexec -n 2 xpnn train -c lenet --epochs 1 --limit-train 2000 --limit-test 500 --no-progress \
    -o ranks | grep "on 2 ranks"
python -c 'import numpy; meta = str(numpy.load("ranks/last.npz")["meta"]); assert "\"ranks\": 2" in meta'
xpnn parity -c lenet --batch-size 4 --json > parity.json
python -c 'import json; report = json.load(open("parity.json")); assert report["passed"], report; print("-- parity:", report["compared"])'
echo "installed-package smoke test: ok"
