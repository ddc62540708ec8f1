"""Weights are trusted only after checking: evaluate, predict and export refuse a checkpoint whose
weights are not finite or beyond `WEIGHT_BOUND` (a diverged run's "last good" one), in one line,
writing nothing."""
import numpy
import pytest
from click.testing import CliRunner
from PIL import Image

from xpnn.cli import cli
from xpnn.training.runs import WEIGHT_BOUND, load_trained


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], prog_name="xpnn")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("trusted") / "run"
    result = invoke("train", "-c", "lenet", "--epochs", "1", "--batch-size", "50",
                    "--limit-train", "100", "--limit-test", "50", "--no-progress", "-o", run_dir)
    assert result.exit_code == 0, result.output
    return run_dir


def altered(source, target, change):
    """A copy of checkpoint `source` at `target`, the first weight array changed by `change`."""
    with numpy.load(source, allow_pickle=False) as archive:
        entries = {name: archive[name] for name in archive.files}
    first = sorted(name for name in entries if name.startswith("weights/"))[0]
    entries[first] = change(entries[first].copy())
    numpy.savez(target, **entries)
    return target, first[len("weights/"):]


def blow_up(weights):
    return (weights * 3e19 / numpy.abs(weights).max()).astype(weights.dtype)  # finite, huge


def poison(weights):
    weights.flat[0] = numpy.nan
    return weights


@pytest.mark.parametrize("change, problem", [(blow_up, "holds values up to 3e+19 in size"),
                                             (poison, "holds NaN or infinite values")])
def test_evaluate_predict_and_export_refuse_untrustworthy_weights(tiny_run, tmp_path, change,
                                                                  problem):
    path, name = altered(tiny_run / "best.npz", tmp_path / "diverged.npz", change)
    picture = tmp_path / "digit.png"
    Image.fromarray(numpy.pad(numpy.full((12, 4), 255, numpy.uint8), 8)).save(picture)
    commands = [("evaluate", path, "--limit-test", "20"), ("predict", path, picture),
                ("export", path, "-o", tmp_path / "model.onnx")]
    for command in commands:
        result = invoke(*command)
        assert result.exit_code == 1, (command, result.output)
        line = result.stderr.strip()
        assert "\n" not in line and line.startswith("Error: "), line
        assert f"checkpoint {path} cannot be used: its parameter {name!r} {problem}" in line, line
        assert "nan" not in result.stdout.lower()
    assert not (tmp_path / "model.onnx").exists()


def test_weights_within_the_bound_load(tiny_run, tmp_path):
    path, _ = altered(tiny_run / "best.npz", tmp_path / "large.npz",
                      lambda weights: (weights * WEIGHT_BOUND / numpy.abs(weights).max())
                      .astype(weights.dtype))
    trained = load_trained(path)
    largest = max(float(numpy.abs(p.data).max()) for p in trained.net.parameters())
    assert 0.99 * WEIGHT_BOUND <= largest <= WEIGHT_BOUND
