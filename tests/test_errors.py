"""Bad input: run.py answers each case with one line saying what is wrong (no traceback) and a
non-zero exit code."""
import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import yaml
from click.testing import CliRunner

from xpnn.backend import CPU
from xpnn.cli import cli
from xpnn.training import load_checkpoint, load_config, start_run

REPO = Path(__file__).resolve().parent.parent
LENET = REPO / "configs" / "lenet.yaml"
MNIST = REPO / "data" / "mnist"
LIMITS = ["--limit-train", "100", "--limit-test", "100", "--no-progress"]
QUICK = ["--epochs", "1", "--batch-size", "50", *LIMITS]


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], prog_name="xpnn")


def assert_one_line_error(result, *fragments):
    """Exit code 1, and stderr is exactly one 'Error: ...' line holding every fragment."""
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"uncaught {result.exception!r}"
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def lenet_with(tmp_path, change):
    """Write the lenet config after `change(config)` and return its path."""
    config = yaml.safe_load(LENET.read_text())
    change(config)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def setter(section, key, value):
    def change(config):
        config[section][key] = value
    return change


def rename(section, old, new):
    def change(config):
        container = config if section is None else config[section]
        container[new] = container.pop(old)
    return change


def adam_with(**options):
    """The train section made an adamw one (no momentum) with `options`."""
    def change(config):
        config["train"].pop("momentum", None)
        config["train"].update(optimizer="adamw", **options)
    return change


def replace_layer(index, layer):
    def change(config):
        config["model"]["layers"][index] = layer
    return change


def insert_layer(index, layer):
    def change(config):
        config["model"]["layers"].insert(index, layer)
    return change


# -- config files ---------------------------------------------------------------------------------

CONFIG_CASES = {
    "misspelt section": (rename(None, "train", "trian"),
                         ["unknown key 'trian'", "did you mean 'train'?"]),
    "misspelt train key": (rename("train", "epochs", "epohcs"),
                           ["train: unknown key 'epohcs'", "did you mean 'epochs'?"]),
    "misspelt data key": (rename("data", "dataset", "datset"), ["did you mean 'dataset'?"]),
    "misspelt layer": (replace_layer(2, "ReluLayer"), ["'ReluLayer'", "did you mean 'ReLULayer'?"]),
    "misspelt layer argument": (
        replace_layer(0, {"ConvLayer": {"in_channels": 1, "out_channels": 6, "kernal_size": 5}}),
        ["unknown key 'kernal_size'", "did you mean 'kernel_size'?"]),
    "misspelt dataset": (setter("data", "dataset", "mnsit"), ["did you mean 'mnist'?"]),
    "misspelt optimizer": (setter("train", "optimizer", "momentum-sgd"),
                           ["train.optimizer must be one of", "did you mean 'momentum_sgd'?"]),
    "misspelt schedule": (setter("train", "schedule", {"name": "cosin"}),
                          ["did you mean 'cosine'?"]),
    "misspelt schedule option": (setter("train", "schedule", {"name": "cosine",
                                                               "warmup_epoch": 0.2}),
                                 ["unknown key 'warmup_epoch'", "did you mean 'warmup_epochs'?"]),
    "batch size as text": (setter("train", "batch_size", "ten"),
                           ["train.batch_size must be an integer, got 'ten'"]),
    "fractional epochs": (setter("train", "epochs", 2.5),
                          ["train.epochs must be an integer, got 2.5"]),
    "zero batch size": (setter("train", "batch_size", 0), ["train.batch_size must be >= 1, got 0"]),
    "negative lr": (setter("train", "lr", -0.1), ["train.lr must be > 0, got -0.1"]),
    "zero lr": (setter("train", "lr", 0), ["train.lr must be > 0, got 0"]),
    "momentum of 1": (setter("train", "momentum", 1.0), ["train.momentum must be in [0, 1), got 1.0"]),
    "negative weight decay": (setter("train", "weight_decay", -1e-4),
                              ["train.weight_decay must be >= 0, got -0.0001"]),
    "negative seed": (setter("train", "seed", -1), ["train.seed must be >= 0, got -1"]),
    "zero step size": (setter("train", "schedule", {"name": "step", "step_size": 0}),
                       ["train.schedule.step_size must be > 0, got 0"]),
    "kernel larger than its input": (
        insert_layer(6, {"MaxPoolLayer": {"kernel_size": 9, "stride": 1}}),
        ["model.layers[6] MaxPoolLayer", "(1, 16, 7, 7)", "kernel 9 is larger than the input of 7 x 7"]),
    "layers that do not chain": (
        replace_layer(7, {"LinearLayer": {"in_features": 800, "out_features": 120}}),
        ["model.layers[7] LinearLayer", "of shape (1, 784)", "expected input of shape (N, 800)"]),
    "class count mismatch": (setter("model", "num_classes", 12),
                             ["the network must give 12 class scores"]),
    "data folder not a string": (setter("data", "data_dir", 5),
                                 ["data.data_dir must be a folder path"]),
    "negative validation": (setter("data", "validation", -1),
                            ["data.validation must be >= 0, got -1"]),
    "misspelt augmentation": (setter("data", "augment", {"rotation": 10}),
                              ["data.augment: unknown key 'rotation'", "did you mean 'rotate'?"]),
    "angle that is not a number": (setter("data", "augment", {"rotate": "ten"}),
                                   ["data.augment.rotate must be a number, got 'ten'"]),
    "augmentation not a mapping": (setter("data", "augment", ["rotate"]),
                                   ["data.augment must be a mapping"]),
    "scale of 1": (setter("data", "augment", {"scale": 1}), ["data.augment.scale", "[0, 1)"]),
    "fractional translation": (setter("data", "augment", {"translate": 1.5}),
                               ["data.augment.translate must be an integer, got 1.5"]),
    "flipped digits": (setter("data", "augment", {"flip": True}),
                       ["data.augment.flip", "refused for 'mnist'"]),
    "label smoothing of 1": (setter("train", "label_smoothing", 1),
                             ["train.label_smoothing must be in [0, 1), got 1"]),
    "adam with momentum": (setter("train", "optimizer", "adam"),
                           ["train.momentum is an option of momentum_sgd, not of adam, which "
                            "takes betas, eps, weight_decay"]),
    "betas for momentum sgd": (setter("train", "betas", [0.9, 0.99]),
                               ["train.betas is an option of adam and adamw, not of momentum_sgd"]),
    "a beta of 1": (adam_with(betas=[0.9, 1.0]), ["train.betas must be a list of two numbers in "
                                                  "[0, 1), like [0.9, 0.999], got [0.9, 1.0]"]),
    "one beta": (adam_with(betas=0.9), ["train.betas must be a list of two numbers"]),
    "a beta that is not a number": (adam_with(betas=[0.9, "x"]),
                                    ["train.betas.1 must be a number, got 'x'"]),
    "zero eps": (adam_with(eps=0), ["train.eps must be > 0, got 0"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_is_one_line_error(tmp_path, case):
    change, fragments = CONFIG_CASES[case]
    path = lenet_with(tmp_path, change)
    result = invoke("train", "-c", path, *LIMITS, "--output", tmp_path / "run")
    assert_one_line_error(result, str(path), *fragments)
    assert not (tmp_path / "run").exists(), "nothing may be created for bad input"
    assert_one_line_error(invoke("describe", "-c", path), *fragments)


@pytest.mark.parametrize("text, fragment", [
    ("", "this one is empty"),
    ("- just\n- a list\n", "this one is a list"),
    ("model: [unclosed\n", "is not valid YAML"),
    ("model: {}\n", "missing required key 'train'"),
])
def test_malformed_config_file_is_one_line_error(tmp_path, text, fragment):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert_one_line_error(invoke("train", "-c", path, *QUICK), fragment)


def test_missing_config_file_is_one_line_error(tmp_path):
    assert_one_line_error(invoke("describe", "-c", tmp_path / "nope.yaml"), "does not exist")


@pytest.mark.parametrize("option, value, fragment", [
    ("--lr", "0", "train.lr must be > 0, got 0.0"),
    ("--lr", "-1", "train.lr must be > 0, got -1.0"),
    ("--lr", "nan", "train.lr must be finite, got nan"),
    ("--batch-size", "0", "train.batch_size must be >= 1, got 0"),
    ("--epochs", "0", "train.epochs must be >= 1, got 0"),
    ("--seed", "-3", "train.seed must be >= 0, got -3"),
    ("--set", "data.validation=-5", "data.validation must be >= 0, got -5"),
    ("--set", "data.augment.rotate=ten", "data.augment.rotate must be a number, got 'ten'"),
    ("--set", "data.augment={rotation: 10}", "did you mean 'rotate'?"),
    ("--set", "data.augment.flip=true", "refused for 'mnist'"),
    ("--set", "train.label_smoothing=-0.1", "train.label_smoothing must be >= 0"),
    ("--dataset", "fashion", "did you mean 'fashion-mnist'?"),
])
def test_bad_command_line_value_is_one_line_error(tmp_path, option, value, fragment):
    """The flag is blamed, not the file that holds a good value."""
    result = invoke("train", "-c", LENET, *QUICK, option, value, "--output", tmp_path / "run")
    line = assert_one_line_error(result, fragment)
    assert line.startswith(f"Error: {option} ")
    assert str(LENET) not in line
    assert not (tmp_path / "run").exists()


def test_numeric_strings_from_yaml_are_accepted_for_real_numbers(tmp_path):
    path = lenet_with(tmp_path, setter("train", "lr", "5e-2"))  # YAML 1.1 leaves 5e-2 a string
    assert load_config(path)["train"]["lr"] == 0.05


# -- data -----------------------------------------------------------------------------------------

def copy_mnist(folder):
    folder.mkdir()
    for path in MNIST.glob("*.gz"):
        shutil.copy(path, folder / path.name)
    return folder


def truncate(folder):
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:50_000])


def corrupt(folder):
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"this is not gzip data at all" * 20)


def labels_out_of_range(folder):
    path = folder / "t10k-labels-idx1-ubyte.gz"
    header_and_labels = bytearray(gzip.decompress(path.read_bytes()))
    header_and_labels[8] = 17  # the first test label
    path.write_bytes(gzip.compress(bytes(header_and_labels)))


def remove(folder):
    (folder / "train-labels-idx1-ubyte.gz").unlink()


@pytest.mark.parametrize("damage, fragment", [
    (remove, "lacks train-labels-idx1-ubyte"),
    (truncate, "train-images-idx3-ubyte.gz"),
    (corrupt, "t10k-labels-idx1-ubyte.gz"),
    (labels_out_of_range, "t10k-labels-idx1-ubyte.gz"),
])
def test_damaged_data_files_are_one_line_errors(tmp_path, damage, fragment):
    folder = copy_mnist(tmp_path / "mnist")
    damage(folder)
    result = invoke("train", "-c", LENET, *QUICK, "--data-dir", folder, "--output", tmp_path / "run")
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "run").exists()


def test_validation_set_as_large_as_the_training_set_is_one_line_error(tmp_path):
    result = invoke("train", "-c", LENET, *QUICK, "--set", "data.validation=60000",
                    "--output", tmp_path / "run")
    assert_one_line_error(result, "data.validation 60,000 leaves no training images",
                          "'mnist' has 60,000", "between 0 and 59,999")
    assert not (tmp_path / "run").exists()


def test_idx_dataset_without_a_folder_is_one_line_error(tmp_path):
    result = invoke("train", "-c", LENET, *QUICK, "--dataset", "idx", "--output", tmp_path / "run")
    assert_one_line_error(result, "data.dataset 'idx'", "--data-dir")
    assert not (tmp_path / "run").exists()


def test_missing_data_folder_is_one_line_error(tmp_path):
    result = invoke("train", "-c", LENET, *QUICK, "--data-dir", tmp_path / "nowhere")
    assert_one_line_error(result, "does not exist")


def test_labels_beyond_the_networks_classes_are_one_line_error(tmp_path):
    def five_classes(config):
        config["model"]["num_classes"] = 5
        config["model"]["layers"][-1] = {"LinearLayer": {"in_features": 84, "out_features": 5}}
    path = lenet_with(tmp_path, five_classes)
    result = invoke("train", "-c", path, *QUICK, "--output", tmp_path / "run")
    assert_one_line_error(result, "train labels from 0 to 9", "labels must lie in [0, 4]")


# -- devices --------------------------------------------------------------------------------------

def test_gpu_without_cupy_or_device_is_one_line_error(tmp_path):
    from xpnn.backend import gpu_unavailable_reason
    if gpu_unavailable_reason() is None:
        pytest.skip("a GPU is usable here")
    for command in (["train", "-c", LENET, *QUICK], ["bench", "-c", LENET, "--steps", "1"],
                    ["parity", "-c", LENET]):
        assert_one_line_error(invoke(*command, "--device" if command[0] != "parity" else
                                     "--device-b", "gpu"), "GPU requested but", "--device cpu")


def test_unknown_device_name_is_a_usage_error():
    result = invoke("train", "-c", LENET, "--device", "tpu")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Invalid value for '--device': 'tpu'; expected cpu, gpu, cuda or cuda:N" in result.stderr


# -- checkpoints and run folders ------------------------------------------------------------------

@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lenet") / "run"
    start_run(load_config(LENET, {"train.epochs": 1, "train.batch_size": 50}), CPU, run_dir,
              limit_train=100, limit_test=100, progress=False, echo=lambda line: None).fit()
    return run_dir


def test_checkpoint_of_another_architecture_is_refused(lenet_run):
    resnet = REPO / "configs" / "resnet.yaml"
    assert_one_line_error(invoke("evaluate", lenet_run / "best.npz", "-c", resnet),
                          "another architecture", "first mismatch",
                          "'layers.4.conv_layers.0.weight'")
    assert_one_line_error(invoke("train", "--resume", lenet_run, "-c", resnet),
                          "another architecture", "first mismatch")


def test_resume_with_another_config_is_refused(tmp_path, lenet_run):
    path = lenet_with(tmp_path, setter("train", "lr", 0.01))
    assert_one_line_error(invoke("train", "--resume", lenet_run, "-c", path),
                          "differs from the one", "train.")


def test_corrupt_checkpoint_is_one_line_error(tmp_path, lenet_run):
    path = tmp_path / "broken.npz"
    path.write_bytes((lenet_run / "last.npz").read_bytes()[:1000])
    assert_one_line_error(invoke("evaluate", path), "not a readable checkpoint")
    assert_one_line_error(invoke("evaluate", tmp_path / "missing.npz"), "does not exist")


def test_resume_needs_a_run_folder(tmp_path):
    assert_one_line_error(invoke("train", "--resume", tmp_path / "nowhere"), "is not a folder")
    assert_one_line_error(invoke("train", "--resume", tmp_path), "holds no last.npz")


def test_resume_keeps_its_settings(lenet_run):
    result = invoke("train", "--resume", lenet_run, "--lr", "0.1", "--limit-train", "5")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--lr 0.1, --limit-train cannot be combined with --resume" in result.stderr


def test_neither_config_nor_resume_is_a_usage_error():
    result = invoke("train")
    assert result.exit_code == 2 and "give -c CONFIG to start a run" in result.stderr


def test_output_folder_that_holds_a_run_is_refused(lenet_run):
    assert_one_line_error(invoke("train", "-c", LENET, *QUICK, "--output", lenet_run),
                          "already holds a training run", f"--resume {lenet_run}")


def test_output_folder_under_a_file_is_refused_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = invoke("train", "-c", LENET, *QUICK, "--output", blocker / "run")
    assert_one_line_error(result, "cannot create the output folder", "choose another with --out")
    assert "epoch" not in result.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_output_folder_is_refused(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert_one_line_error(invoke("train", "-c", LENET, *QUICK, "--output", folder),
                              "cannot write to the output folder")
    finally:
        folder.chmod(0o700)


def test_unwritable_output_folder_is_refused_even_for_root(tmp_path, monkeypatch):
    """The same refusal as above, on machines where the test runs as root: the write probe
    is made to fail as a read-only folder would make it fail."""
    from xpnn.training import files

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(kwargs.get("dir", "")))

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    result = invoke("train", "-c", LENET, *QUICK, "--output", tmp_path / "locked")
    assert_one_line_error(result, "cannot write to the output folder", "Permission denied",
                          "choose another with --out")
    assert "epoch" not in result.stdout


# -- divergence -----------------------------------------------------------------------------------

def test_nan_loss_stops_with_one_line_and_keeps_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    result = invoke("train", "-c", LENET, *QUICK, "--lr", "1e6", "--checkpoint-every", "1",
                    "--output", run_dir)
    assert_one_line_error(result, "training diverged", "last good checkpoint", "is unchanged",
                          "lower learning rate")
    good = load_checkpoint(run_dir / "last.npz")
    assert all(numpy.isfinite(w).all() for w in good.weights.values())


# -- the real entry point -------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["describe", "-c", "MISSPELT"], "did you mean 'epochs'?"),
    (["train", "-c", str(LENET), "--device", "gpu"], "GPU requested but"),
    (["evaluate", "MISSING"], "does not exist"),
])
def test_run_py_process_prints_one_line_without_traceback(tmp_path, args, fragment):
    if "--device" in args:
        from xpnn.backend import gpu_unavailable_reason
        if gpu_unavailable_reason() is None:
            pytest.skip("a GPU is usable here")
    misspelt = lenet_with(tmp_path, rename("train", "epochs", "epoch"))
    args = [str(misspelt) if a == "MISSPELT" else str(tmp_path / "x.npz") if a == "MISSING"
            else a for a in args]
    completed = subprocess.run([sys.executable, str(REPO / "run.py"), *args], cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], lines
