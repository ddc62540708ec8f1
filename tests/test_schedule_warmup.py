"""The cosine's warm-up in optimizer steps: shipped configs train as they did at full length,
and a short run warms up over as many steps as a full one (saying so when that is most of it)."""
import pytest

from xpnn import configs
from xpnn.nets import ConfigError
from xpnn.optim import Schedule
from xpnn.training import load_config
from xpnn.training.batches import num_batches
from xpnn.training.setup import make_schedule



def shipped_names():
    from pathlib import Path
    return sorted(path.stem for path in Path(configs.__file__).parent.glob("*.yaml"))


@pytest.mark.parametrize("name", shipped_names())
def test_every_shipped_config_sets_the_rates_it_set_in_epochs_at_every_step(name):
    train = load_config(name)["train"]
    steps = num_batches(60000 - load_config(name)["data"]["validation"], train["batch_size"])
    schedule = make_schedule(train, steps)
    before = Schedule("cosine", train["lr"], train["epochs"], warmup_epochs=0.2)
    assert train["schedule"].get("warmup_steps", steps // 5) == steps // 5
    assert ("warmup_steps" in train["schedule"]) == name.startswith(("resnet", "fashion_resnet"))
    for epoch in range(train["epochs"]):
        for step in range(steps):
            assert schedule(epoch + step / steps) == before(epoch + step / steps)
    assert schedule.warmup_note() is None


def test_a_short_run_keeps_its_warmup_in_steps_and_says_so_in_one_line():
    train = load_config("resnet", {"train.epochs": 1})["train"]
    schedule = make_schedule(train, 20)  # --limit-train 2000: 20 steps
    assert schedule(19 / 20) == pytest.approx(0.05 * (19 / 20 + 1e-3) / (110 / 20))
    note = schedule.warmup_note()
    assert "\n" not in note and "110 steps" in note and "20 steps" in note
    assert "0.00865 of 0.05" in note and "warmup_steps" in note


@pytest.mark.parametrize("schedule, text", [
    ({"name": "cosine", "warmup_steps": 10, "warmup_epochs": 0.1}, "not both"),
    ({"name": "cosine", "warmup_steps": 2.5}, "warmup_steps"),
    ({"name": "cosine", "warmup_steps": -1}, "warmup_steps"),
    ({"name": "step", "warmup_steps": 10}, "unknown key 'warmup_steps'"),
])
def test_bad_warmup_steps_are_refused_in_one_line(schedule, text):
    with pytest.raises(ConfigError, match=text) as raised:
        load_config("lenet", {"train.schedule": schedule})
    assert "\n" not in str(raised.value)
