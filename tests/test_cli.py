"""run.py end to end through click's CliRunner: train -> stop -> evaluate -> resume, describe, plot,
bench and parity."""
import json
import signal
import sys
import types
from pathlib import Path

import numpy
import pytest
from click.testing import CliRunner

from xpnn import nets
from xpnn.backend import Mode
from xpnn.cli import cli
from xpnn.training import load_checkpoint, load_config, read_metrics
from xpnn.training.trainer import Trainer

REPO = Path(__file__).resolve().parent.parent
LENET = REPO / "configs" / "lenet.yaml"
QUICK = ["--batch-size", "50", "--limit-train", "500", "--limit-test", "300", "--no-progress"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], prog_name="xpnn")


def assert_ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Traceback" not in result.output


# -- help -----------------------------------------------------------------------------------------

def test_the_checkpoint_interval_in_the_help_is_the_trainers():
    from xpnn.training.trainer import CHECKPOINT_EVERY
    assert f"[default: {CHECKPOINT_EVERY}]" in invoke("train", "--help").output


def test_help_lists_every_command():
    result = invoke("--help")
    assert_ok(result)
    for command in ("train", "evaluate", "describe", "plot", "bench", "parity"):
        assert command in result.output


@pytest.mark.parametrize("command, option", [("train", "--resume"), ("evaluate", "--device"),
                                             ("describe", "--config"), ("plot", "--output"),
                                             ("bench", "--profile"), ("parity", "--device-b")])
def test_each_command_has_help(command, option):
    result = invoke(command, "--help")
    assert_ok(result)
    assert option in result.output


# -- describe -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["lenet", "resnet"])
def test_describe_prints_the_network_and_its_parameter_count(name):
    config = load_config(REPO / "configs" / f"{name}.yaml")
    net = nets.build(config["model"])
    result = invoke("describe", "-c", REPO / "configs" / f"{name}.yaml")
    assert_ok(result)
    assert result.output == f"{net!r}\nTotal parameters: {net.num_parameters():,}\n"


def test_the_readmes_printed_network_is_what_describe_prints():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    shown = readme.split("$ xpnn describe -c resnet\n", 1)[1].split("```", 1)[0]
    result = invoke("describe", "-c", "resnet")
    assert_ok(result)
    assert shown == result.output


def test_describe_shapes_gives_each_layers_shape_parameters_and_flops():
    result = invoke("describe", "-c", "resnet", "--shapes")
    assert_ok(result)
    lines = result.output.splitlines()
    table = lines[lines.index("    (loss_layer): SoftmaxCrossEntropyLossLayer:") + 1:-1]
    assert table[0].split() == ["layer", "output", "shape", "parameters", "FLOPs/image"]
    assert table[1].split() == ["input", "1", "x", "28", "x", "28"]
    rows = {line.split()[0]: line.split() for line in table[2:]}
    conv_outputs = 6 * 28 * 28
    assert rows["(0)"] == ["(0)", "ConvLayer", "6", "x", "28", "x", "28", "156",
                           f"{conv_outputs * 2 * 25:,}"]
    block = 2 * (16 * 14 * 14) * 2 * 16 * 9 + 3 * 16 * 14 * 14  # two convs, add, ReLU
    assert rows["(4)"][-3:] == ["14", "4,640", f"{block:,}"]
    assert rows["(1)"][-1] == f"{6 * 14 * 14 * 3:,}"  # 2 x 2 windows: 3 comparisons each
    assert rows["(8)"][-3:] == ["784", "0", "0"]  # flatten: a view
    assert rows["(9)"][-3:] == ["120", "94,200", f"{120 * 2 * 784:,}"]
    assert rows["total"][1] == "117,066" and lines[-1] == "Total parameters: 117,066"
    assert int(rows["total"][2].replace(",", "")) == sum(
        int(row[-1].replace(",", "")) for key, row in rows.items() if key != "total")


# -- train -> stop -> evaluate -> resume ------------------------------------------------------------

def stop_after_steps(monkeypatch, steps):
    """Make the trainer see a Ctrl-C after `steps` steps, as its signal handler would."""
    original = Trainer.train_step
    done = {"steps": 0}

    def step(self, *args):
        original(self, *args)
        done["steps"] += 1
        if done["steps"] == steps:
            self.stops.signal = signal.SIGINT

    monkeypatch.setattr(Trainer, "train_step", step)


def test_train_stop_evaluate_resume(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        stop_after_steps(patch, 13)  # 10 steps per epoch: stops in epoch 2
        result = invoke("train", "-c", LENET, "--epochs", "2", *QUICK, "--output", run_dir)
    assert result.exit_code == 130, result.output
    assert result.stderr.strip() == (f"SIGINT: stopped at epoch 2 step 3/10 and saved "
                                     f"{run_dir / 'last.npz'}; continue with: xpnn "
                                     f"train --resume {run_dir}")
    assert result.stdout.splitlines()[0].startswith(f"run folder {run_dir}: MNISTNetwork")
    assert "epoch 1/2: train loss" in result.stdout
    assert [r["epoch"] for r in read_metrics(run_dir)] == [1]

    result = invoke("evaluate", run_dir / "best.npz", "--limit-test", "300")
    assert_ok(result)
    lines = result.output.splitlines()
    assert "epoch 1" in lines[0] and "300 images" in lines[0]
    accuracy = float(lines[1].split()[1].rstrip("%"))
    assert lines[1].startswith("accuracy: ") and 10 < accuracy <= 100
    correct = int(lines[1].split("(")[1].split("/")[0])
    assert correct == round(300 * read_metrics(run_dir)[0]["test_acc"])
    assert lines[2].startswith("loss: ")
    matrix = numpy.array([[int(v) for v in line.split()[1:]] for line in lines[5:15]])
    assert matrix.shape == (10, 10) and matrix.sum() == 300
    assert numpy.trace(matrix) == correct

    result = invoke("train", "--resume", run_dir, "--no-progress")
    assert_ok(result)
    assert result.output.startswith(f"resuming {run_dir} at epoch 2 step 3/10 on cpu\n")
    assert "epoch 2/2: train loss" in result.output
    assert "done: last epoch test accuracy" in result.output
    assert "validation chose epoch" in result.output
    assert [r["epoch"] for r in read_metrics(run_dir)] == [1, 2]
    assert (load_checkpoint(run_dir / "last.npz").epoch,
            load_checkpoint(run_dir / "last.npz").step) == (2, 0)

    result = invoke("train", "--resume", run_dir, "--no-progress")
    assert_ok(result)
    assert "nothing to do" in result.output

    result = invoke("evaluate", run_dir, "--limit-test", "300")  # a folder: its best.npz
    assert_ok(result)
    assert "best.npz" in result.output.splitlines()[0]

    result = invoke("evaluate", run_dir, "--limit-test", "300", "--json", "-o",
                    tmp_path / "report.json")
    assert_ok(result)
    report = json.loads(result.output)
    assert report == json.loads((tmp_path / "report.json").read_text())
    assert report["checkpoint"] == str(run_dir / "best.npz") and report["images"] == 300
    assert report["network"] == "MNISTNetwork" and report["epoch"] == 2
    assert report["class_names"] == [str(digit) for digit in range(10)]
    confusion = numpy.array(report["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 300
    assert report["correct"] == numpy.trace(confusion) == round(300 * report["accuracy"])
    result = invoke("evaluate", run_dir, "--limit-test", "300", "-o", tmp_path / "again.json")
    assert_ok(result)
    assert result.output.splitlines()[-1] == f"wrote {tmp_path / 'again.json'}"
    assert json.loads((tmp_path / "again.json").read_text()) == report


def test_train_with_two_workers_learns_and_resumes_with_them(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        stop_after_steps(patch, 4)
        result = invoke("train", "-c", LENET, "--epochs", "1", *QUICK, "--workers", "2",
                        "--output", run_dir)
    assert result.exit_code == 130
    assert load_checkpoint(run_dir / "last.npz").state.workers == 2
    assert_ok(invoke("train", "--resume", run_dir, "--no-progress"))
    assert read_metrics(run_dir)[0]["test_acc"] > 0.2  # 10 steps: well above chance (0.1)


def test_default_run_folder_is_named_after_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "-c", LENET, "--epochs", "1", "--batch-size", "100",
                    "--limit-train", "100", "--limit-test", "100", "--no-progress")
    assert_ok(result)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("lenet-") and (run_dir / "best.npz").exists()


def test_validation_0_trains_on_every_image_and_chooses_no_best(tmp_path):
    run_dir = tmp_path / "run"
    from xpnn.backend import CPU
    from xpnn.training import start_run
    every = start_run(load_config(LENET, {"data.validation": 0}), CPU, tmp_path / "unused",
                      progress=False)
    assert every.train_count == 60000 and "validation" not in every.evaluated
    result = invoke("train", "-c", LENET, "--epochs", "1", "--batch-size", "100",
                    "--limit-train", "200", "--limit-test", "100", "--set", "data.validation=0",
                    "--no-progress", "--output", run_dir)
    assert_ok(result)
    assert "no validation set, so no best.npz" in result.output
    assert not (run_dir / "best.npz").exists()
    (record,) = read_metrics(run_dir)
    assert record["val_acc"] is None and record["val_loss"] is None
    assert "| val loss" not in result.output


def write_idx_folder(folder, size, count=60):
    """A folder of the four IDX files: `count` random uint8 images of `size` per split, labels
    0..9 in turn."""
    from xpnn.data import FILE_STEMS, encode_idx
    folder.mkdir()
    rng = numpy.random.default_rng(0)
    labels = numpy.arange(count, dtype=numpy.uint8) % 10
    for split in ("train", "test"):
        images = rng.integers(0, 256, (count, *size), dtype=numpy.uint8)
        (folder / FILE_STEMS[f"{split}_images"]).write_bytes(encode_idx(images))
        (folder / FILE_STEMS[f"{split}_labels"]).write_bytes(encode_idx(labels))
    return folder


def test_any_idx_folder_trains_with_dataset_idx(tmp_path):
    folder = write_idx_folder(tmp_path / "letters", (28, 28))
    result = invoke("train", "-c", LENET, "--epochs", "1", "--batch-size", "10", "--dataset",
                    "idx", "--data-dir", folder, "--set", "data.validation=20", "--no-progress",
                    "--output", tmp_path / "run")
    assert_ok(result)
    assert "40 training images, 4 steps per epoch" in result.output
    config = load_checkpoint(tmp_path / "run" / "last.npz").config
    assert config["data"] == {"dataset": "idx", "data_dir": str(folder), "validation": 20,
                              "augment": {}}
    assert_ok(invoke("train", "--resume", tmp_path / "run", "--no-progress"))  # finds it again


def test_idx_images_of_another_size_than_the_network_takes_are_one_line_error(tmp_path):
    folder = write_idx_folder(tmp_path / "small", (20, 20))
    result = invoke("train", "-c", LENET, "--dataset", "idx", "--data-dir", folder,
                    "--no-progress", "--output", tmp_path / "run")
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "shape (1, 20, 20)" in line and "input_shape (1, 28, 28)" in line
    assert not (tmp_path / "run").exists()


# -- checkpoint metadata edited by hand: one line naming the field, on --resume and evaluate -----

@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A lenet run stopped in its second epoch (last.npz at epoch 1, step 5 of 10)."""
    run_dir = tmp_path_factory.mktemp("stopped") / "run"
    assert_ok(invoke("train", "-c", LENET, "--epochs", "2", "--checkpoint-every", "15", *QUICK,
                     "--output", run_dir))
    from test_checkpoint import rewrite_meta
    rewrite_meta(run_dir / "last.npz", epoch=1, step=5,
                 metrics=[load_checkpoint(run_dir / "last.npz").state.metrics[0]])
    return run_dir


@pytest.mark.parametrize("name, value, fragment", [
    ("epoch", "1", "has a bad epoch: '1'; it must be a whole number from 0"),
    ("epoch", -1, "has a bad epoch: -1; it must be a whole number from 0"),
    ("step", -3, "has a bad step: -3"),
    ("step", 10**20, "has a bad step: 100000000000000000000"),
    ("workers", 0, "has a bad workers: 0; it must be a whole number from 1"),
    ("metrics", "good", "has a bad metrics: 'good'"),
    ("epoch_progress", "half", "has a bad epoch_progress: 'half'"),
    ("epoch_progress.seen", -1, "has a bad epoch_progress.seen: -1"),
    ("optimizer_scalars.lr", [0.1], "has a bad optimizer_scalars.lr: [0.1]"),
    ("optimizer_scalars.steps", "12", "has a bad optimizer_scalars.steps: '12'"),
])
def test_an_edited_checkpoint_field_is_one_line_on_resume_and_evaluate(stopped_run, tmp_path, name,
                                                                      value, fragment):
    import shutil
    from test_checkpoint import rewrite_meta
    run_dir = tmp_path / "run"
    shutil.copytree(stopped_run, run_dir)
    for checkpoint in ("last.npz", "best.npz"):
        rewrite_meta(run_dir / checkpoint, **{name: value})
    for args in (["train", "--resume", run_dir, "--no-progress"],
                 ["evaluate", run_dir / "last.npz", "--limit-test", "10"],
                 ["evaluate", run_dir, "--limit-test", "10"]):
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("Error: ") and fragment in line, (args, line)
        assert "edited or damaged file" in line


def test_the_untouched_stopped_run_resumes(stopped_run, tmp_path):
    import shutil
    shutil.copytree(stopped_run, tmp_path / "run")
    result = invoke("train", "--resume", tmp_path / "run", "--no-progress")
    assert_ok(result)
    assert "resuming" in result.output and "at epoch 2 step 5/10" in result.output


# -- plot -----------------------------------------------------------------------------------------

def write_metrics(run_dir, epochs=3, validation=True):
    run_dir.mkdir()
    records = [{"epoch": e, "train_loss": 1 / e, "train_acc": 1 - 0.1 / e, "test_loss": 1.1 / e,
                "test_acc": 1 - 0.12 / e, "lr": 0.05, "seconds": 1.0} for e in range(1, epochs + 1)]
    if validation:
        for record in records:
            record.update(val_loss=1.05 / record["epoch"], val_acc=1 - 0.11 / record["epoch"])
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize("validation", [True, False], ids=["with-validation", "without"])
def test_plot_draws_a_png(tmp_path, validation):
    write_metrics(tmp_path / "run", validation=validation)
    result = invoke("plot", tmp_path / "run", "-o", tmp_path / "curves.png")
    assert_ok(result)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = invoke("plot", tmp_path / "run")
    assert_ok(result)
    assert (tmp_path / "run" / "curves.png").exists()


@pytest.mark.parametrize("epochs", [1, 2, 3, 30])
def test_plot_ticks_whole_epochs_even_for_short_runs(tmp_path, monkeypatch, epochs):
    import matplotlib.pyplot
    figures = []
    close = matplotlib.pyplot.close
    monkeypatch.setattr(matplotlib.pyplot, "close", lambda figure: (figures.append(figure),
                                                                    close(figure)))
    write_metrics(tmp_path / "run", epochs=epochs)
    assert_ok(invoke("plot", tmp_path / "run"))
    for axes in figures[0].axes:
        low, high = axes.get_xlim()
        ticks = [tick for tick in axes.get_xticks() if low <= tick <= high]
        assert ticks and all(float(tick).is_integer() for tick in ticks), ticks
        assert 1 in ticks or epochs > 10


def test_plot_confusion_draws_the_test_confusion_matrix(tmp_path, monkeypatch):
    import matplotlib.pyplot
    run_dir = tmp_path / "run"
    assert_ok(invoke("train", "-c", LENET, "--epochs", "1", *QUICK, "--output", run_dir))
    figures = []
    close = matplotlib.pyplot.close
    monkeypatch.setattr(matplotlib.pyplot, "close", lambda figure: (figures.append(figure),
                                                                    close(figure)))
    result = invoke("plot", run_dir, "--confusion")
    assert_ok(result)
    assert result.output.splitlines() == [f"wrote {run_dir / 'curves.png'}",
                                          f"wrote {run_dir / 'confusion.png'}"]
    assert (run_dir / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    axes = figures[1].axes[0]
    counts = numpy.array(axes.images[0].get_array())
    report = json.loads(invoke("evaluate", run_dir, "--json").output)
    assert counts.tolist() == report["confusion"]
    assert [label.get_text() for label in axes.get_yticklabels()] == report["class_names"]
    assert f"{100 * report['accuracy']:.2f}% of {report['images']} test images" in \
        axes.get_title()


def test_plot_without_matplotlib_says_so(tmp_path, monkeypatch):
    write_metrics(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    result = invoke("plot", tmp_path / "run")
    assert result.exit_code == 1
    assert result.stderr.strip() == ("Error: plot needs matplotlib, which is not installed: "
                                     "pip install matplotlib")


def test_plot_of_a_folder_without_metrics_is_an_error(tmp_path):
    result = invoke("plot", tmp_path)
    assert result.exit_code == 1 and "metrics.jsonl does not exist" in result.stderr


# -- bench and parity -----------------------------------------------------------------------------

def test_bench_times_training_steps():
    result = invoke("bench", "-c", "lenet", "--batch-size", "8", "--steps", "2", "--warmup", "1",
                    "--workers", "0")
    assert_ok(result)
    lines = result.output.splitlines()
    assert lines[0] == ("MNISTNetwork (lenet): 107,786 parameters, device cpu, batch 8, 2 timed "
                        "steps after 1 warm-up, MomentumSGDOptimizer lr 0.001")
    assert lines[1].startswith("  step time: median ") and lines[2] == "  computed by: the network itself"
    result = invoke("bench", "-c", "lenet", "--batch-size", "4", "--steps", "3", "--warmup", "0",
                    "--workers", "2", "--lr", "0.01", "--json")
    assert_ok(result)
    report = json.loads(result.output)
    assert (report["steps"], len(report["step_ms"]), report["workers"], report["lr"]) == (3, 3, 2,
                                                                                      0.01)
    assert report["fused_kernels"] is False and report["batch_size"] == 4


def test_parity_cpu_against_cpu_passes_and_a_tolerance_can_fail_it():
    result = invoke("parity", "-c", LENET, "--device-b", "cpu", "--batch-size", "4")
    assert_ok(result)
    assert "logits" in result.output and "layers.0.weight" in result.output
    assert result.output.splitlines()[-1].startswith("parity passes: worst relative error ")
    assert result.output.splitlines()[-1].endswith(") is within the tolerance 0.0001")
    result = invoke("parity", "-c", LENET, "--device-b", "cpu", "--batch-size", "4",
                    "--tolerance", "0")
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("Error: parity fails: worst relative error")


def test_parity_at_a_tensor_core_precision_needs_a_gpu_and_takes_its_tolerance(monkeypatch):
    result = invoke("parity", "-c", LENET, "--device-b", "cpu", "--precision", "tf32")
    assert result.exit_code == 2
    assert "--precision tf32 is a GPU's tensor-core arithmetic" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 or "Usage" in result.stderr
    from xpnn.backend.precision import PARITY_TOLERANCE
    assert PARITY_TOLERANCE["fp32"] == 1e-4 < PARITY_TOLERANCE["tf32"] < PARITY_TOLERANCE["bf16"]


def test_parity_says_what_it_compared_and_defaults_to_a_float64_cpu_reference():
    from xpnn.backend import gpu_unavailable_reason
    result = invoke("parity", "-c", "lenet", "--batch-size", "4")
    assert_ok(result)
    first = result.output.splitlines()[0]
    if gpu_unavailable_reason() is None:
        assert first.endswith("cpu float64 (reference) against cuda:0 float32")
    else:
        assert first == ("compared MNISTNetwork (lenet), 4 test images: cpu float64 (reference) "
                         "against cpu float32")
        note = result.output.splitlines()[1]
        assert note.startswith("no GPU here (") and "GPU requested" not in note
        assert note.endswith("): compared the CPU's float32 path with its float64 reference")
    assert result.output.splitlines()[-1].startswith("parity passes: ")


def test_parity_json_for_ci():
    result = invoke("parity", "-c", "lenet", "--batch-size", "3", "--device-b", "cpu",
                    "--dtype-a", "float32", "--json")
    assert_ok(result)
    report = json.loads(result.output)
    assert report["a"] == {"device": "cpu", "dtype": "float32"}
    assert report["b"] == {"device": "cpu", "dtype": "float32"}
    assert report["passed"] is True and report["batch_size"] == 3
    assert {row["name"] for row in report["rows"]} >= {"logits", "loss", "layers.0.weight"}
    assert all(row["max_rel_err"] == 0 for row in report["rows"])  # the same setting twice

    failing = invoke("parity", "-c", "lenet", "--batch-size", "3", "--device-b", "cpu",
                     "--tolerance", "0", "--json")
    assert failing.exit_code == 1
    report = json.loads(failing.output)
    assert report["passed"] is False and report["worst"]["max_rel_err"] > 0


# -- the execution mode: --array-code, --eager, --precision -----------------------------------------

FAKE_GPU = types.SimpleNamespace(is_gpu=True, name="cuda:0")


@pytest.mark.parametrize("command, flags", [
    ("train", ["--array-code", "--eager", "--precision"]), ("bench", ["--array-code", "--eager",
                                                                       "--precision"]),
    ("parity", ["--array-code", "--eager"]), ("evaluate", ["--array-code"]),
    ("predict", ["--array-code"])])
def test_gpu_commands_offer_the_mode_flags(command, flags):
    result = invoke(command, "--help")
    assert_ok(result)
    assert all(flag in result.output for flag in flags)
    assert "--cuda-graph" not in result.output and "--fused-kernels" not in result.output


@pytest.mark.parametrize("args, expected", [
    ([], Mode("fused", graph=True)), (["--eager"], Mode("fused")),
    (["--array-code"], Mode(None, graph=True)), (["--array-code", "--eager"], Mode())])
def test_a_gpu_run_defaults_to_the_graph_and_the_fused_kernels(args, expected, monkeypatch,
                                                                 tmp_path):
    from xpnn.backend.communicator import Ranks
    seen = {}

    def start_run(config, device, run_dir, **options):
        seen.update(options)
        raise SystemExit(0)

    monkeypatch.setattr("xpnn.training.start_run", start_run)
    monkeypatch.setattr("xpnn.cli.ranks.rank_device", lambda name: (FAKE_GPU, Ranks()))
    invoke("train", "-c", LENET, "--output", tmp_path / "run", *args)
    assert seen["mode"] == expected


@pytest.mark.parametrize("args, expected", [
    ([], Mode("fused", graph=True)), (["--eager", "--precision", "tf32"],
                                      Mode("fused", precision="tf32"))])
def test_the_mode_flags_reach_the_benchmark(args, expected, monkeypatch):
    seen = {}

    def benchmark(config, device, **options):
        seen.update(options)
        raise SystemExit(0)

    monkeypatch.setattr("xpnn.tools.bench.benchmark", benchmark)
    monkeypatch.setattr("xpnn.backend.get_device", lambda name: FAKE_GPU)
    invoke("bench", "-c", LENET, *args)
    assert seen["mode"] == expected


def test_the_mode_on_the_cpu_is_numpys_and_the_flags_change_nothing():
    result = invoke("bench", "-c", LENET, "--batch-size", "2", "--steps", "1", "--warmup", "0",
                    "--array-code", "--eager", "--json")
    assert_ok(result)
    report = json.loads(result.output)
    assert (report["fused_kernels"], report["cuda_graph"], report["precision"]) == (False, False,
                                                                                    "fp32")


def test_parity_on_a_gpu_computes_in_the_gpus_mode(monkeypatch):
    seen = {}

    def compare(*args, **options):
        seen.update(options)
        raise SystemExit(0)

    monkeypatch.setattr("xpnn.tools.parity.compare", compare)
    invoke("parity", "-c", LENET, "--device-b", "cpu")
    assert seen["mode"] is None  # two CPU settings: nothing to choose
    real_get_device = __import__("xpnn.backend", fromlist=["get_device"]).get_device
    monkeypatch.setattr("xpnn.backend.get_device",
                        lambda name: FAKE_GPU if name == "gpu" else real_get_device(name))
    invoke("parity", "-c", LENET, "--device-b", "gpu", "--eager")
    assert seen["mode"] == Mode("fused")


@pytest.mark.parametrize("args, fragment", [
    (["train", "-c", LENET, "--precision", "bf16", "--limit-train", "50"],
     "precision bf16 is a GPU's tensor-core arithmetic; on cpu use fp32"),
    (["train", "-c", LENET, "--precision", "fp16"], "'fp16' is not one of 'fp32', 'tf32', "
                                                    "'bf16'"),
    (["train", "-c", LENET, "--set", "train.precision=fp8"],
     "train.precision must be one of 'fp32', 'tf32', 'bf16', got 'fp8'"),
    (["train", "-c", LENET, "--cuda-graph"],
     "--cuda-graph is gone: a GPU run now replays each training step as a CUDA graph by "
     "default; --eager turns it off"),
    (["bench", "-c", LENET, "--fused-kernels"],
     "--fused-kernels is gone: a GPU run now computes with the fused CUDA kernels by default; "
     "--array-code turns them off"),
])
def test_a_mode_that_cannot_run_is_a_one_line_error(args, fragment, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert fragment in result.output
    assert not (tmp_path / "runs").exists()


def test_the_profile_of_a_graph_step_is_a_usage_error(monkeypatch):
    monkeypatch.setattr("xpnn.backend.get_device", lambda name: FAKE_GPU)
    result = invoke("bench", "-c", LENET, "--profile")
    assert result.exit_code == 2 and "--profile times each layer" in result.output


@pytest.mark.parametrize("variable", ["XPNN_CUDA_GRAPH", "XPNN_FUSED_KERNELS"])
def test_a_removed_mode_variable_is_a_usage_error_naming_it(monkeypatch, variable):
    monkeypatch.setenv(variable, "1")
    result = invoke("bench", "-c", LENET, "--steps", "1", "--warmup", "0")
    assert result.exit_code == 2
    assert f"{variable} is gone: a GPU run uses the fused kernels and the CUDA graph" in \
        result.output


@pytest.mark.parametrize("args, variable, fragment", [
    (["--precision", "tf32"], None, "precision tf32 is a GPU's tensor-core arithmetic; on cpu"),
    ([], "XPNN_FUSED_KERNELS", "XPNN_FUSED_KERNELS is gone"),
])
def test_a_cpu_mode_every_rank_would_refuse_is_refused_once_before_the_ranks_start(
        monkeypatch, tmp_path, args, variable, fragment):
    started = []
    monkeypatch.setattr("xpnn.cli.ranks.start_ranks", lambda count: started.append(count) or 0)
    if variable:
        monkeypatch.setenv(variable, "1")
    result = invoke("train", "-c", LENET, "--processes", "2", *args, "-o", tmp_path / "run")
    assert result.exit_code != 0 and started == [], result.output  # each rank said it, before
    assert fragment in result.stderr and "Traceback" not in result.output


def test_ranks_started_by_train_say_to_continue_with_the_command_the_user_typed(monkeypatch):
    """Not `mpiexec -n 2 python -m xpnn ...` (another python, perhaps): `xpnn train --resume`
    starts the run's ranks again itself."""
    from xpnn.backend.communicator import Ranks
    from xpnn.cli import ranks as launch

    launched = {}
    monkeypatch.setattr(launch, "find_mpiexec", lambda: "/usr/bin/mpiexec")
    monkeypatch.setattr(launch, "is_hydra", lambda mpiexec: True)
    monkeypatch.setattr(launch, "run_forwarding_stops",
                        lambda command, env=None: launched.update(env) or 0)
    assert invoke("train", "-c", LENET, "--processes", "2").exit_code == 0
    assert launched[launch.STARTED_AS] == "xpnn"
    two = types.SimpleNamespace(size=2)
    context = types.SimpleNamespace(find_root=lambda: types.SimpleNamespace(info_name="run.py"))
    monkeypatch.setenv(launch.STARTED_AS, "xpnn")
    assert launch.continue_command(context, two, "my run") == "xpnn train --resume 'my run'"
    monkeypatch.delenv(launch.STARTED_AS)
    assert launch.continue_command(context, two, "r") == ("mpiexec -n 2 python run.py train "
                                                          "--resume r")
    assert launch.continue_command(context, Ranks(), "r") == "python run.py train --resume r"


@pytest.mark.parametrize("value", ["two", "0"])
def test_a_bad_xpnn_processes_variable_is_a_usage_error_naming_it(monkeypatch, value):
    monkeypatch.setenv("XPNN_PROCESSES", value)
    result = invoke("train", "-c", LENET, "--epochs", "1")
    assert result.exit_code == 2
    assert (f"Invalid value for '--processes': XPNN_PROCESSES must be a whole number >= 1, got "
            f"{value!r}" in result.output)
    assert "Traceback" not in result.output




def test_the_command_line_starts_without_numpy():
    """Each command imports the library inside its function (so `xpnn --help` is fast); the
    CLI's copy of the precisions is the backend's."""
    import subprocess
    from xpnn.backend.dispatch import PRECISIONS
    from xpnn.cli.options import PRECISIONS as CLI_PRECISIONS
    assert CLI_PRECISIONS == PRECISIONS
    done = subprocess.run([sys.executable, "-c", "import sys, xpnn.cli.main\n"
                           "assert 'numpy' not in sys.modules, 'numpy imported'"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
