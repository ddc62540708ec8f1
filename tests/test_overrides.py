"""Configs found by name, --set overrides (and who is blamed when they are wrong), and sizes that
cannot fit, refused before anything is allocated."""
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from xpnn import nets
from xpnn.cli import cli
from xpnn.nets import ConfigError
from xpnn.training import load_config
from xpnn.configs import shipped as shipped_configs
from xpnn.training.config import find_config
from xpnn.training.overrides import Override, apply_overrides, parse_override

REPO = Path(__file__).resolve().parent.parent
LENET = REPO / "configs" / "lenet.yaml"
WRITE_UP_CONFIGS = ["lenet", "resnet", "resnet_3blocks", "resnet_deep", "resnet_leaky",
                    "resnet_stem"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], prog_name="xpnn")


def one_line_error(result):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


# -- configs by name ----------------------------------------------------------------------------

def test_every_config_of_the_checkout_ships_and_is_found_by_name():
    shipped = shipped_configs()
    assert sorted(shipped) == sorted(path.stem for path in (REPO / "configs").glob("*.yaml"))
    assert set(WRITE_UP_CONFIGS) <= set(shipped)
    for name in shipped:
        for spec in (name, f"{name}.yaml", f"configs/{name}.yaml"):
            assert find_config(spec).read_bytes() == (REPO / "configs" / f"{name}.yaml").read_bytes()


def test_a_config_is_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("describe", "-c", "resnet")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("MNISTResNetwork:")


def test_a_file_of_the_same_name_wins_over_a_shipped_config(tmp_path, monkeypatch):
    config = yaml.safe_load(LENET.read_text())
    config["model"]["name"] = "MyLeNet"
    (tmp_path / "resnet.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    assert find_config("resnet.yaml") == Path("resnet.yaml")
    assert invoke("describe", "-c", "resnet.yaml").output.startswith("MyLeNet:")


def test_a_folder_of_a_shipped_configs_name_does_not_hide_it(tmp_path, monkeypatch):
    """`xpnn train -c resnet -o resnet` leaves a run folder called resnet: the name still means
    the shipped config; a folder of any other name is refused as a config in one line."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "resnet").mkdir()
    (tmp_path / "mine").mkdir()
    assert find_config("resnet") == shipped_configs()["resnet"]
    assert invoke("describe", "-c", "resnet").output.startswith("MNISTResNetwork:")
    assert one_line_error(invoke("describe", "-c", "mine")) == (
        "Error: config mine is a folder; give a YAML file or the name of a shipped config")


def test_an_unknown_config_name_lists_the_shipped_ones():
    line = one_line_error(invoke("describe", "-c", "resnt"))
    assert "'resnt' is neither a config file nor the name of a config shipped" in line
    assert "did you mean 'resnet'?" in line and "resnet_stem" in line


# -- --set: where a key goes --------------------------------------------------------------------

RAW = yaml.safe_load(LENET.read_text())


@pytest.mark.parametrize("text, key, value", [
    ("train.momentum=0.95", "train.momentum", 0.95),
    ("train.epochs=3", "train.epochs", 3),
    ("data.dataset=fashion-mnist", "data.dataset", "fashion-mnist"),
    ("model.input_shape=[1, 28, 28]", "model.input_shape", [1, 28, 28]),
    ("train.schedule={name: step, step_size: 2}", "train.schedule",
     {"name": "step", "step_size": 2}),
    ("model.name=My Net", "model.name", "My Net"),
])
def test_set_reads_its_value_as_yaml(text, key, value):
    override = parse_override(text)
    assert (override.key, override.value, override.flag) == (key, value, f"--set {text}")


@pytest.mark.parametrize("text", ["train.lr", "=3", "train..lr=3", "train.lr=[1, 2"])
def test_a_malformed_set_is_refused(text):
    with pytest.raises(ConfigError, match="--set"):
        parse_override(text)


def test_set_reaches_a_layers_arguments_through_its_number():
    config = apply_overrides(RAW, [Override("model.layers.9.out_features", 64),
                                   Override("model.layers.11.LinearLayer.in_features", 64)])
    assert config["model"]["layers"][9] == {"LinearLayer": {"in_features": 120, "out_features": 64}}
    assert config["model"]["layers"][11] == {"LinearLayer": {"in_features": 64, "out_features": 10}}
    assert RAW["model"]["layers"][9]["LinearLayer"]["out_features"] == 84  # a copy was changed
    net = nets.build(config["model"])
    assert net.layers[9].out_features == 64


def test_set_gives_a_bare_layer_arguments_and_replaces_whole_layers():
    config = apply_overrides(RAW, [
        Override("model.layers.2", "LeakyReLULayer"),
        Override("model.layers.2.slope", 0.2),
        Override("model.layers.5", {"LeakyReLULayer": {"slope": 0.1}}),
    ])
    assert config["model"]["layers"][2] == {"LeakyReLULayer": {"slope": 0.2}}
    assert config["model"]["layers"][5] == {"LeakyReLULayer": {"slope": 0.1}}


def test_set_of_identical_layers_changes_only_the_one_numbered():
    config = yaml.safe_load((REPO / "configs" / "resnet.yaml").read_text())
    assert config["model"]["layers"][4] == config["model"]["layers"][5]
    changed = apply_overrides(config, [Override("model.layers.5.kernel_size", 5)])
    assert changed["model"]["layers"][4] == {"ResNetBlock": {"channels": 16}}
    assert changed["model"]["layers"][5] == {"ResNetBlock": {"channels": 16, "kernel_size": 5}}


def test_set_makes_a_missing_section():
    raw = {key: value for key, value in RAW.items() if key != "data"}
    assert apply_overrides(raw, [Override("data.dataset", "mnist")])["data"] == {"dataset": "mnist"}


@pytest.mark.parametrize("text, fragment", [
    ("model.layers.30.out_features=5", "model.layers has 12 entries, numbered 0 to 11"),
    ("model.layers.first.out_features=5", "model.layers is a list; a number from 0 to 11"),
    ("train.lr.value=5", "train.lr is a value (0.05), not a section"),
])
def test_a_key_that_cannot_be_reached_is_blamed_on_its_flag(text, fragment):
    line = one_line_error(invoke("describe", "-c", LENET, "--set", text))
    assert line.startswith(f"Error: --set {text}: ") and fragment in line


# -- --set and the train shorthands: who is blamed ------------------------------------------------

@pytest.mark.parametrize("args, flag, fragment", [
    (["--set", "train.momentum=1.5"], "--set train.momentum=1.5",
     "train.momentum must be in [0, 1), got 1.5"),
    (["--set", "train.momentun=0.5"], "--set train.momentun=0.5",
     "train: unknown key 'momentun' (did you mean 'momentum'?)"),
    (["--set", "model.layers.7.in_features=abc"], "--set model.layers.7.in_features=abc",
     "model.layers[7] LinearLayer: LinearLayer in_features must be a positive integer"),
    (["--set", "model.layers.2.slope=0.1"], "--set model.layers.2.slope=0.1",
     "ReLULayer takes no arguments"),
    (["--set", "model.name="], "--set model.name=", "model.name must be a non-empty string"),
    (["--set", "train.schedule.warmup_epoch=1"], "--set train.schedule.warmup_epoch=1",
     "unknown key 'warmup_epoch' (did you mean 'warmup_epochs'?)"),
    (["--epochs", "0"], "--epochs 0", "train.epochs must be >= 1, got 0"),
])
def test_a_bad_override_is_blamed_on_its_flag_not_the_file(tmp_path, args, flag, fragment):
    result = invoke("train", "-c", LENET, *args, "--output", tmp_path / "run", "--no-progress")
    line = one_line_error(result)
    assert line.startswith(f"Error: {flag}: ") and fragment in line
    assert str(LENET) not in line
    assert not (tmp_path / "run").exists()


def test_flags_that_together_break_the_chain_are_all_named():
    line = one_line_error(invoke("describe", "-c", LENET, "--set", "model.layers.9.out_features=50",
                                 "--set", "train.lr=0.1"))
    assert line.startswith(f"Error: {LENET} with --set model.layers.9.out_features=50, "
                           f"--set train.lr=0.1: model.layers[11] LinearLayer cannot take")


def test_a_bad_file_is_still_blamed_on_the_file(tmp_path):
    config = yaml.safe_load(LENET.read_text())
    config["train"]["epochs"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    line = one_line_error(invoke("describe", "-c", path, "--set", "train.lr=0.1"))
    assert line == f"Error: {path}: train.epochs must be >= 1, got 0"


def test_a_flag_can_mend_a_file():
    config = load_config(LENET, [Override("train.momentum", 0.95),
                                 Override("model.layers.9.out_features", 50),
                                 Override("model.layers.11.in_features", 50)])
    assert config["train"]["momentum"] == 0.95
    assert config["model"]["layers"][9]["LinearLayer"]["out_features"] == 50


def test_set_changes_what_train_runs(tmp_path):
    run = tmp_path / "run"
    result = invoke("train", "-c", "lenet", "--set", "train.epochs=1", "--set",
                    "train.momentum=0.5", "--set", "model.layers.9.out_features=32", "--set",
                    "model.layers.11.in_features=32", "--limit-train", "200", "--limit-test",
                    "100", "--no-progress", "--output", run)
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["momentum"] == 0.5 and saved["train"]["epochs"] == 1
    assert saved["model"]["layers"][9] == {"LinearLayer": {"in_features": 120, "out_features": 32}}


def test_resume_refuses_set():
    result = invoke("train", "--resume", "somewhere", "--set", "train.lr=0.1")
    assert result.exit_code == 2
    assert "--set train.lr=0.1 cannot be combined with --resume" in result.stderr


# -- sizes that cannot fit --------------------------------------------------------------------------

def test_a_network_too_large_for_memory_is_refused_before_any_weight_is_drawn(monkeypatch):
    drawn = []
    monkeypatch.setattr("xpnn.layers.linear.new_rng",
                        lambda rng: drawn.append(rng) or pytest.fail("weights were drawn"))
    line = one_line_error(invoke("describe", "-c", LENET, "--set",
                                 "model.layers.7.out_features=1000000000000", "--set",
                                 "model.layers.9.in_features=1000000000000"))
    assert line.startswith("Error: --set model.layers.7.out_features=1000000000000: "
                           "model.layers[7] LinearLayer: the network would hold ")
    assert "785,000,000,000,000 of them in this layer" in line
    assert "PiB as float32" in line and "of memory available: make the layer smaller" in line
    assert not drawn


def test_a_batch_too_large_for_memory_is_refused_before_the_run_starts(tmp_path, monkeypatch):
    monkeypatch.setattr("xpnn.training.setup.available_bytes", lambda device: 50 * 2**20)
    result = invoke("train", "-c", LENET, "--batch-size", "5000", "--limit-train", "5000",
                    "--no-progress", "--output", tmp_path / "run")
    line = one_line_error(result)
    assert "train.batch_size 5,000 does not fit: a training step on cpu needs at least" in line
    assert "50.0 MiB is available; use a smaller batch size" in line
    assert not (tmp_path / "run").exists()


def test_an_estimate_never_refuses_a_run_that_fits(tmp_path):
    result = invoke("train", "-c", LENET, "--epochs", "1", "--batch-size", "2000",
                    "--limit-train", "2000", "--limit-test", "100", "--no-progress",
                    "--output", tmp_path / "run")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", [None, "", "   ", 5, ["a"]])
def test_a_model_name_must_be_a_non_empty_string(name):
    model = dict(RAW["model"], name=name)
    with pytest.raises(ConfigError, match="model.name must be a non-empty string"):
        nets.build(model)
