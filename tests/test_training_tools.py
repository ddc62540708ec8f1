"""Training tools: early stopping on validation, starting from a trained run's weights,
extending a finished run, and several seeds in one call."""
import numpy
import pytest

from xpnn.backend import CPU
from xpnn.nets import ConfigError
from xpnn.training import (CheckpointError, Trainer, load_checkpoint, load_config, read_metrics,
                           resume_run, start_run)

QUIET = dict(progress=False, echo=lambda line: None)
SMALL = dict(limit_train=300, limit_test=100, checkpoint_every=0, **QUIET)


def lenet(**settings):
    return load_config("lenet", {"train.batch_size": 20, "data.validation": 200, **settings})


def stopping(patience=2, min_delta=0.5, epochs=6):
    return lenet(**{"train.epochs": epochs, "train.early_stopping": {"patience": patience,
                                                                    "min_delta": min_delta}})


def test_early_stopping_ends_the_run_after_patience_epochs_without_a_gain(tmp_path):
    lines = []
    run_dir = tmp_path / "run"
    records = start_run(stopping(), CPU, run_dir, limit_train=300, limit_test=100,
                        progress=False, echo=lines.append).fit()
    # min_delta 0.5: no epoch after the first gains 50 points, so epochs 2 and 3 are stale
    assert [record["stale_epochs"] for record in records] == [0, 1, 2]
    assert read_metrics(run_dir) == records
    assert lines[-1].startswith("early stopping: validation accuracy gained less than 50 points "
                                "in 2 epoch(s)") and lines[-1].endswith("after epoch 3 of 6")
    last, best = load_checkpoint(run_dir / "last.npz"), load_checkpoint(run_dir / "best.npz")
    assert last.state.stopped_early and last.epoch == 3
    assert best.state.stopped_early and best.user == {"stopped_early_after": 3}
    again = resume_run(run_dir, CPU, **QUIET)
    assert again.finished and again.fit() == records


def test_min_delta_zero_counts_any_gain_and_a_plain_run_has_no_stale_count(tmp_path):
    trainer = start_run(stopping(patience=1, min_delta=0.0, epochs=2), CPU, tmp_path / "a",
                        **SMALL)
    watch, rule = trainer.early_stopping, {"patience": 3, "min_delta": 0.0}
    watch.count(0.5, rule)
    watch.count(0.5, rule)  # no gain: stale
    assert (watch.reference, watch.stale_epochs) == (0.5, 1)
    watch.count(0.5001, rule)  # a gain
    assert (watch.reference, watch.stale_epochs, watch.stopped) == (0.5001, 0, False)
    plain = start_run(lenet(**{"train.epochs": 1}), CPU, tmp_path / "b", **SMALL).fit()
    assert "stale_epochs" not in plain[0]


def test_a_resumed_run_keeps_counting_stale_epochs(tmp_path, monkeypatch):
    reference = start_run(stopping(), CPU, tmp_path / "reference", **SMALL).fit()
    original, done = Trainer.train_step, []

    def crashing(self, *args):
        if len(done) == 35:  # 15 steps per epoch: in epoch 3, after epoch 2's stale count
            raise KeyboardInterrupt
        done.append(1)
        return original(self, *args)

    monkeypatch.setattr(Trainer, "train_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        start_run(stopping(), CPU, tmp_path / "run", **SMALL).fit()
    monkeypatch.setattr(Trainer, "train_step", original)
    saved = load_checkpoint(tmp_path / "run" / "last.npz").state
    assert (saved.epoch, saved.stale_epochs, saved.stopped_early) == (2, 1, False)
    records = resume_run(tmp_path / "run", CPU, **QUIET).fit()
    strip = [lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]][0]
    assert strip(records) == strip(reference) and len(records) == 3


@pytest.mark.parametrize("value, text", [
    ({"patience": 0}, "train.early_stopping.patience"),
    ({"patience": 2, "min_delat": 0.1}, "unknown key 'min_delat'"),
    ({"patience": 2, "min_delta": 1.5}, "fraction of accuracy"),
    (3, "must be a mapping like"),
])
def test_bad_early_stopping_settings_are_refused_in_one_line(value, text):
    with pytest.raises(ConfigError, match=text) as raised:
        lenet(**{"train.early_stopping": value})
    assert "\n" not in str(raised.value)


def test_early_stopping_without_a_validation_set_is_refused():
    with pytest.raises(ConfigError, match="data.validation is 0"):
        load_config("lenet", {"data.validation": 0, "train.early_stopping": {"patience": 2}})


# -- --init-from ----------------------------------------------------------------------------------

def invoke(*args):
    from click.testing import CliRunner
    from xpnn.cli import cli
    return CliRunner().invoke(cli, [str(arg) for arg in args], prog_name="xpnn")


QUICK = ["--batch-size", "20", "--limit-train", "100", "--limit-test", "50", "--no-progress",
         "--set", "data.validation=200"]


@pytest.fixture(scope="module")
def trained_lenet(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    result = invoke("train", "-c", "lenet", "--epochs", "1", *QUICK, "--output", run_dir)
    assert result.exit_code == 0, result.output
    return run_dir


def test_init_from_starts_a_new_run_from_a_trained_runs_weights(tmp_path, trained_lenet):
    trainer = start_run(lenet(**{"train.epochs": 1, "train.seed": 7}), CPU, tmp_path / "tuned",
                        init_from=trained_lenet, **SMALL)
    given = load_checkpoint(trained_lenet / "best.npz").weights
    mine = trainer.net.state_dict()
    assert all(numpy.array_equal(mine[name], given[name]) for name in given)
    assert trainer.epoch == 0 and trainer.optimizer.steps == 0
    result = invoke("train", "-c", "lenet", "--epochs", "1", *QUICK, "--init-from", trained_lenet,
                    "--output", tmp_path / "cli")
    assert result.exit_code == 0, result.output
    assert read_metrics(tmp_path / "cli")[0]["val_acc"] > read_metrics(trained_lenet)[0]["val_acc"]


def test_init_from_takes_a_npz_saved_outside_a_run(tmp_path):
    """`--init-from` takes "a .npz file", `save_checkpoint`'s included: it holds no run's config."""
    from xpnn import nets
    from xpnn.training import save_checkpoint

    net = nets.build(lenet()["model"], seed=3)
    save_checkpoint(tmp_path / "mine.npz", net)
    trainer = start_run(lenet(**{"train.epochs": 1}), CPU, tmp_path / "tuned",
                        init_from=tmp_path / "mine.npz", **SMALL)
    mine = trainer.net.state_dict()
    assert all(numpy.array_equal(mine[name], value) for name, value in net.state_dict().items())


def test_init_from_another_architecture_is_refused_naming_both(tmp_path, trained_lenet):
    result = invoke("train", "-c", "resnet", "--epochs", "1", *QUICK, "--init-from",
                    trained_lenet, "--output", tmp_path / "run")
    assert result.exit_code != 0
    message = result.output.strip().splitlines()[-1]
    assert "MNISTResNetwork" in message and "MNISTNetwork" in message
    assert str(trained_lenet / "best.npz") in message and not (tmp_path / "run").exists()
    result = invoke("train", "--resume", trained_lenet, "--init-from", trained_lenet)
    assert result.exit_code == 2 and "--init-from cannot be combined with --resume" in result.output
    with pytest.raises(CheckpointError, match="holds neither best.npz nor last.npz"):
        start_run(lenet(), CPU, tmp_path / "other", init_from=tmp_path, **SMALL)


# -- extending a finished run -----------------------------------------------------------------------

def weights(run_dir, name="last.npz"):
    return load_checkpoint(run_dir / name).weights


def test_extending_a_constant_rate_run_is_bit_identical_to_starting_it_longer(tmp_path):
    constant = {"train.schedule": {"name": "constant"}}
    start_run(lenet(**{"train.epochs": 2}, **constant), CPU, tmp_path / "long", **SMALL).fit()
    start_run(lenet(**{"train.epochs": 1}, **constant), CPU, tmp_path / "short", **SMALL).fit()
    records = resume_run(tmp_path / "short", CPU, epochs=2, **QUIET).fit()
    assert len(records) == 2
    long, extended = weights(tmp_path / "long"), weights(tmp_path / "short")
    assert all(numpy.array_equal(long[name], extended[name]) for name in long)
    assert load_checkpoint(tmp_path / "short" / "last.npz").config["train"]["epochs"] == 2


def test_extending_a_cosine_run_follows_the_longer_runs_rates_from_there(tmp_path):
    result = invoke("train", "-c", "lenet", "--epochs", "1", *QUICK, "--output", tmp_path / "run")
    assert result.exit_code == 0, result.output
    result = invoke("train", "--resume", tmp_path / "run", "--epochs", "3", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output and "epoch 3/3" in result.output
    records = read_metrics(tmp_path / "run")
    longer = start_run(lenet(**{"train.epochs": 3}), CPU, tmp_path / "longer", limit_train=100,
                       limit_test=50, **QUIET)
    assert [record["lr"] for record in records[1:]] == [
        longer.schedule(epoch + 4 / 5) for epoch in (1, 2)]  # 5 steps: the last one's rate
    assert "epochs: 3" in (tmp_path / "run" / "config.yaml").read_text()
    result = invoke("train", "--resume", tmp_path / "run", "--epochs", "2")
    assert result.exit_code != 0 and "extended, not shortened" in result.output
    result = invoke("train", "-c", "lenet", "--resume", tmp_path / "run", "--epochs", "4")
    assert result.exit_code == 2 and "drop -c" in result.output


def test_a_run_that_stopped_early_is_not_extended(tmp_path):
    start_run(stopping(), CPU, tmp_path / "run", **SMALL).fit()
    with pytest.raises(Exception, match="stopped early after epoch 3"):
        resume_run(tmp_path / "run", CPU, epochs=8, **QUIET)


# -- --seeds --------------------------------------------------------------------------------------

def test_seeds_train_one_run_per_seed_and_print_mean_and_sd(tmp_path):
    import json
    from xpnn.training.seeds import mean_sd
    parent = tmp_path / "seeds"
    result = invoke("train", "-c", "lenet", "--epochs", "1", *QUICK, "--seeds", "0-1,5",
                    "--output", parent)
    assert result.exit_code == 0, result.output
    folders = sorted(path.name for path in parent.iterdir() if path.is_dir())
    assert folders == ["seed-0", "seed-1", "seed-5"]
    tests = [read_metrics(parent / name)[0]["test_acc"] for name in folders]
    assert [load_checkpoint(parent / name / "last.npz").config["train"]["seed"]
            for name in folders] == [0, 1, 5]
    assert len(set(tests)) > 1  # the seeds differ
    mean, sd = mean_sd(tests)
    lines = result.output.splitlines()
    assert f"test accuracy, last epoch: {100 * mean:.2f} ± {100 * sd:.2f}% (mean ± sd over 3 " \
           f"seeds)" in lines
    assert any(line.startswith("test accuracy, best (validation-chosen): ") for line in lines)
    table = lines[lines.index(next(line for line in lines if "test acc (best)" in line)):][:4]
    assert [row.split()[0] for row in table[1:]] == ["0", "1", "5"]
    assert json.loads((parent / "seeds.json").read_text())["count"] == 3
    again = invoke("train", "-c", "lenet", "--epochs", "1", *QUICK, "--seeds", "0-1,5",
                   "--output", parent)  # every run finished: nothing trains, same summary
    assert again.exit_code == 0, again.output
    assert f"{100 * mean:.2f} ± {100 * sd:.2f}%" in again.output


@pytest.mark.parametrize("seeds, text", [("3-1", "is empty"), ("a", "like 0-4"),
                                         ("1,1", "twice")])
def test_bad_seeds_are_refused_in_one_line(seeds, text, tmp_path):
    result = invoke("train", "-c", "lenet", "--seeds", seeds, "--output", tmp_path / "p")
    assert result.exit_code != 0 and text in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "p").exists()
    assert mean_sd_of_one() == (0.5, 0.0)


def mean_sd_of_one():
    from xpnn.training.seeds import mean_sd
    return mean_sd([0.5])
