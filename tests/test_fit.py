"""Training from Python: `xpnn.fit`, the `Trainer`'s checks, and the README's Python section run
as written."""
from pathlib import Path

import numpy
import pytest

import xpnn
from xpnn import layers, nets
from xpnn.backend import CPU
from xpnn.data import load_dataset
from xpnn.nets import ConfigError
from xpnn.training import (RunFolderError, Trainer, load_checkpoint, load_config, read_metrics,
                           start_run)
from xpnn.training import evaluate, save_checkpoint
from xpnn.training.runs import evaluate_trained, load_trained

REPO = Path(__file__).resolve().parent.parent
QUIET = dict(progress=False, echo=lambda line: None)


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


def small_lenet(**train):
    return load_config("lenet", {"data.validation": 100,
                                 **{f"train.{key}": value for key, value in train.items()}})


def test_trainer_refuses_a_run_folder_it_cannot_create_before_any_work(tmp_path, mnist,
                                                                      monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    steps = []
    monkeypatch.setattr(Trainer, "train_step", lambda self, *args: steps.append(args))
    with pytest.raises(RunFolderError) as raised:
        Trainer(small_lenet(epochs=1), mnist, CPU, blocker / "run", limit_train=50,
                limit_test=20, **QUIET)
    message = str(raised.value)
    assert "\n" not in message and str(blocker / "run") in message and not steps


def test_trainer_makes_a_missing_run_folder_and_trains_into_it(tmp_path, mnist):
    run_dir = tmp_path / "new" / "run"
    trainer = Trainer(small_lenet(epochs=1, batch_size=25), mnist, CPU, run_dir,
                      limit_train=50, limit_test=20, **QUIET)
    assert run_dir.is_dir()
    assert len(trainer.fit()) == 1 and (run_dir / "last.npz").exists()


# -- xpnn.fit -------------------------------------------------------------------------------------

def arrays(dataset, start, count):
    return (numpy.asarray(dataset.train_images[start:start + count]),
            numpy.asarray(dataset.train_labels[start:start + count]))


def test_importing_xpnn_stays_light_and_fit_comes_on_first_use():
    import subprocess
    import sys
    code = ("import sys, xpnn; heavy = [m for m in ('numpy', 'xpnn.training') if m in "
            "sys.modules]; assert not heavy, heavy; from xpnn.training.fit import fit; "
            "assert xpnn.fit is fit")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_fit_on_arrays_writes_a_run_folder_as_the_command_line_does(tmp_path, mnist):
    lines = []
    history = fit_small(tmp_path / "run", mnist, echo=lines.append)
    assert len(history) == 2 and [record["epoch"] for record in history] == [1, 2]
    assert history.run_dir == tmp_path / "run" and history.best is not None
    assert {"val_acc", "test_acc", "train_loss"} <= set(history[-1])
    assert {"best.npz", "config.yaml", "last.npz", "metrics.jsonl", "metrics.csv"} <= {
        path.name for path in history.run_dir.iterdir()}
    assert read_metrics(history.run_dir) == [dict(record) for record in history]
    assert lines[0].startswith("run folder ") and lines[1].startswith("epoch 1/2: train loss")
    assert lines[-1].startswith("done: last epoch test accuracy")
    config = load_checkpoint(history.run_dir / "last.npz").config
    assert config["data"] == {**config["data"], "dataset": "arrays", "validation": 60}
    with pytest.raises(ConfigError, match=r"given in Python.*to evaluate it: "
                                          r"xpnn\.training\.evaluate\(load_trained\(RUN\)\.net"):
        evaluate_trained(history.run_dir)  # says how to evaluate it, not only how to resume it


def fit_small(run_dir, mnist, **options):
    return xpnn.fit("lenet", train=arrays(mnist, 0, 240), validation=arrays(mnist, 240, 60),
                    test=arrays(mnist, 300, 50), epochs=2, batch_size=20, run_dir=run_dir,
                    checkpoint_every=4, progress=False, **{"echo": None, **options})


def test_fit_resumes_an_interrupted_run_to_the_same_bits(tmp_path, mnist, monkeypatch):
    reference = fit_small(tmp_path / "reference", mnist)
    original, done = Trainer.train_step, []

    def crashing(self, *args):
        if len(done) == 17:
            raise KeyboardInterrupt
        done.append(1)
        return original(self, *args)

    monkeypatch.setattr(Trainer, "train_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        fit_small(tmp_path / "run", mnist)
    monkeypatch.setattr(Trainer, "train_step", original)
    assert load_checkpoint(tmp_path / "run" / "last.npz").epoch == 1
    history = fit_small(tmp_path / "run", mnist, resume=True)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in history] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in reference]
    for name in ("last.npz", "best.npz"):
        mine = load_checkpoint(tmp_path / "run" / name).weights
        theirs = load_checkpoint(reference.run_dir / name).weights
        assert all(numpy.array_equal(mine[key], theirs[key]) for key in theirs)
    again = xpnn.fit("lenet", train=arrays(mnist, 0, 240), validation=arrays(mnist, 240, 60),
                     test=arrays(mnist, 300, 50), epochs=2, batch_size=20,
                     resume_from=tmp_path / "run", progress=False, echo=None)
    assert again == history  # nothing left to train


def test_fit_on_a_dataset_trains_what_start_run_trains(tmp_path, mnist):
    config = small_lenet(epochs=1, batch_size=20)
    start_run(config, CPU, tmp_path / "cli", limit_train=200, limit_test=50, **QUIET).fit()
    history = xpnn.fit(config, train=mnist, run_dir=tmp_path / "fit", limit_train=200,
                       limit_test=50, progress=False, echo=None)
    mine = load_checkpoint(history.run_dir / "last.npz").weights
    theirs = load_checkpoint(tmp_path / "cli" / "last.npz").weights
    assert all(numpy.array_equal(mine[key], theirs[key]) for key in theirs)


def test_fit_takes_a_model_section_with_default_training(tmp_path, mnist):
    model = {"name": "Tiny", "input_shape": [1, 28, 28],
             "layers": ["FlattenLayer", {"LinearLayer": {"in_features": 784, "out_features": 10}}]}
    history = xpnn.fit(model, train=arrays(mnist, 0, 500), test=arrays(mnist, 500, 100),
                       batch_size=10, run_dir=tmp_path / "run", progress=False, echo=None)
    assert len(history) == 1 and history.best is None and history[0]["test_acc"] > 0.5
    assert not (history.run_dir / "best.npz").exists()


@pytest.mark.parametrize("change, error, text", [
    (dict(train=(numpy.zeros((4, 1, 28, 28), numpy.float32), numpy.zeros(4, int))), ValueError,
     "uint8"),
    (dict(train=(numpy.zeros((4, 1, 28, 28), numpy.uint8), numpy.zeros(3, int))), ValueError,
     "one per image"),
    (dict(train=(numpy.zeros((4, 1, 28, 28), numpy.uint8), numpy.full(4, 1.5))), ValueError,
     "integers"),
    (dict(config=object()), TypeError, "nets.Network"),
    (dict(epochs=0), ConfigError, "train.epochs"),
])
def test_fit_refuses_bad_input_in_one_line_before_any_work(tmp_path, change, error, text):
    arguments = dict(config="lenet", train=(numpy.zeros((4, 1, 28, 28), numpy.uint8),
                                            numpy.zeros(4, int)), run_dir=tmp_path / "run")
    arguments.update(change)
    with pytest.raises(error, match=text) as raised:
        xpnn.fit(arguments.pop("config"), **arguments, progress=False, echo=None)
    assert "\n" not in str(raised.value) and not (tmp_path / "run").exists()


def test_fit_without_validation_or_test_records_nulls_that_the_metrics_reader_takes(tmp_path,
                                                                                    mnist):
    history = xpnn.fit("lenet", train=arrays(mnist, 0, 40), batch_size=20,
                       run_dir=tmp_path / "run", progress=False, echo=None)
    assert history[0]["test_acc"] is None and history[0]["val_acc"] is None
    assert read_metrics(history.run_dir) == list(history)


# -- the progress bar -------------------------------------------------------------------------------

def test_the_progress_bar_shows_loss_and_accuracy_from_the_first_step(tmp_path, mnist,
                                                                     monkeypatch):
    import xpnn.training.trainer as trainer_module
    shown = []

    class Bar:
        def __init__(self, total, initial, **options):
            self.n = initial

        def update(self, count):
            self.n += count

        def set_postfix(self, refresh=True, **values):
            shown.append((self.n, values))

        def close(self):
            pass

    monkeypatch.setattr(trainer_module, "tqdm", Bar)
    Trainer(small_lenet(epochs=1, batch_size=10), mnist, CPU, tmp_path / "run", limit_train=120,
            limit_test=20, **QUIET).fit()
    assert [step for step, values in shown] == [1, 2, 4, 8, 12]
    assert all(set(values) == {"loss", "acc"} for step, values in shown)
    assert shown[0][1]["acc"].endswith("%") and float(shown[0][1]["loss"]) > 0


# -- the README's Python section --------------------------------------------------------------------

def readme_script():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Training from Python", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readmes_training_script_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["readme"])
    namespace = {"__name__": "__main__"}
    exec(compile(readme_script(), "README.md", "exec"), namespace)
    history, result = namespace["history"], namespace["result"]
    assert len(history) == 2 and (tmp_path / "runs" / "small" / "best.npz").exists()
    assert result.accuracy > 0.8, result.accuracy  # 4,000 images, 2 epochs: 87.4%
    assert (namespace["probabilities"].argmax(axis=1) == namespace["test"][1][:8]).mean() >= 0.75
    out = capsys.readouterr().out
    assert "{'note': 'my small net'}" in out and "nothing to do: runs/small has finished" in out


def test_fit_extends_a_finished_run_given_more_epochs(tmp_path, mnist):
    first = fit_small(tmp_path / "run", mnist)
    more = xpnn.fit("lenet", train=arrays(mnist, 0, 240), validation=arrays(mnist, 240, 60),
                    test=arrays(mnist, 300, 50), epochs=3, batch_size=20,
                    resume_from=first.run_dir, progress=False, echo=None)
    assert [record["epoch"] for record in more] == [1, 2, 3] and more[:2] == first


def test_fit_without_data_trains_on_the_configs_dataset_and_guards_its_folder(tmp_path):
    history = xpnn.fit("lenet", epochs=1, batch_size=25, limit_train=50, limit_test=40,
                       run_dir=tmp_path / "run", progress=False, echo=None)
    assert len(history) == 1 and history[0]["test_acc"] is not None
    with pytest.raises(RunFolderError, match="resume=True"):
        xpnn.fit("lenet", epochs=1, run_dir=tmp_path / "run", progress=False, echo=None)
    with pytest.raises(ValueError, match="give run_dir"):
        xpnn.fit("lenet", epochs=1, resume=True, progress=False, echo=None)


# -- xpnn.fit of a built network --------------------------------------------------------------------

def hand_built(seed=0, activation=layers.ReLULayer):
    """A network made in Python from layers, no config."""
    return nets.Network("HandBuilt", [
        layers.ConvLayer(1, 4, 5, rng=seed), layers.MaxPoolLayer(2, 2), activation(),
        layers.ResNetBlock(4, activation=activation, rng=seed + 1), layers.FlattenLayer(),
        layers.LinearLayer(4 * 14 * 14, 10, rng=seed + 2)], input_shape=(1, 28, 28))


def fit_network(network, run_dir, mnist, **options):
    return xpnn.fit(network, train=arrays(mnist, 0, 200), validation=arrays(mnist, 200, 50),
                    test=arrays(mnist, 250, 50), batch_size=20, run_dir=run_dir,
                    progress=False, echo=None, **options)


def weights_equal(mine, theirs):
    return mine.keys() == theirs.keys() and all(numpy.array_equal(mine[key], theirs[key])
                                                for key in theirs)


def test_fit_trains_a_built_network_in_place_from_its_own_weights(tmp_path, mnist):
    network = hand_built()
    history = fit_network(network, tmp_path / "run", mnist)
    assert history.net is network and len(history) == 1
    last = load_checkpoint(history.run_dir / "last.npz")
    assert weights_equal(network.state_dict(), last.weights)
    assert last.config["model"] == nets.model_section(hand_built())
    # fitted again, it starts from the weights it now holds: the run the model section that
    # describes it makes from those weights
    again = fit_network(network, tmp_path / "again", mnist)
    reference = fit_network(nets.model_section(network), tmp_path / "reference", mnist,
                            init_from=history.run_dir / "last.npz")
    mine = load_checkpoint(again.run_dir / "last.npz").weights
    assert weights_equal(load_checkpoint(reference.run_dir / "last.npz").weights, mine)
    assert weights_equal(network.state_dict(), mine) and not weights_equal(mine, last.weights)
    assert [record["val_acc"] for record in reference] == [record["val_acc"] for record in again]


def test_a_built_networks_run_folder_evaluates_and_resumes_like_any_other(tmp_path, mnist):
    network = hand_built(seed=3)
    first = fit_network(network, tmp_path / "run", mnist)
    trained = load_trained(first.run_dir)  # rebuilt from the model section, best.npz's weights
    assert repr(trained.net) == repr(network)
    test = arrays(mnist, 250, 50)
    assert evaluate(trained.net, *test).accuracy == first.best["test_acc"]
    more = fit_network(network, tmp_path / "run", mnist, resume=True, epochs=2)
    assert [record["epoch"] for record in more] == [1, 2] and more[:1] == first
    assert weights_equal(network.state_dict(),
                         load_checkpoint(first.run_dir / "last.npz").weights)


class ScaledReLU(layers.ReLULayer):
    """A layer of the user's own: no config names it."""


@pytest.mark.parametrize("network, error, text", [
    (nets.Network("Own", [layers.FlattenLayer(), layers.LinearLayer(784, 10), ScaledReLU()],
                  input_shape=(1, 28, 28)), ConfigError, r"layers\[2\] ScaledReLU is a subclass"),
    (hand_built(activation=lambda: layers.LeakyReLULayer(0.2)), ConfigError,
     r"layers\[3\] ResNetBlock differs .*conv_layers.1.slope is 0.2, not 0.01"),
    (hand_built().to(dtype="float64"), ValueError, "float32 weights, but HandBuilt's are float64"),
])
def test_fit_refuses_a_built_network_no_config_describes_in_one_line(tmp_path, mnist, network,
                                                                     error, text):
    with pytest.raises(error, match=text) as raised:
        fit_network(network, tmp_path / "run", mnist)
    message = str(raised.value)
    assert "\n" not in message and not (tmp_path / "run").exists()
    if error is ConfigError:
        assert "fit cannot train" in message and "a loop of your own" in message


def test_fit_refuses_init_from_beside_a_built_network(tmp_path, mnist):
    with pytest.raises(ValueError, match="drop init_from"):
        fit_network(hand_built(), tmp_path / "run", mnist, init_from=tmp_path / "other")
    assert not (tmp_path / "run").exists()
