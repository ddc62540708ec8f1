"""Training from Python: `xpnn.fit`, the `Trainer`'s checks, and the README's Python section run
as written."""
from pathlib import Path

import numpy
import pytest

from xpnn.backend import CPU
from xpnn.data import load_dataset
from xpnn.training import RunFolderError, Trainer, load_config

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
