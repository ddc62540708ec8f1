"""Messages name what the user knows: the target file, not its hidden temporary twin; a full
disk names the file and says how to go on; every resume hint is a command to paste (quoted)."""
import errno
import os
import shlex
import signal

import pytest
from click.testing import CliRunner

from xpnn.cli import cli
from xpnn.training import files
from xpnn.training.files import atomic_write
from xpnn.training.trainer import Trainer

QUICK = ["-c", "lenet", "--epochs", "2", "--batch-size", "50", "--limit-train", "200",
         "--limit-test", "50", "--no-progress"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], prog_name="xpnn")


def full_disk_on_write(monkeypatch, name, after):
    """Make the fsync of the `after`+1-th write of `name` fail as a full disk does."""
    original = os.fsync
    seen = {"writes": 0}

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.basename(target).startswith(f".{name}.") and target.endswith(".partial"):
            seen["writes"] += 1
            if seen["writes"] > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)


def test_a_failed_write_names_the_target_not_its_temporary(tmp_path, monkeypatch):
    full_disk_on_write(monkeypatch, "data.bin", after=0)
    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / "data.bin", lambda f: f.write(b"x"))
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(tmp_path / "data.bin")
    assert os.listdir(tmp_path) == []


def test_a_full_disk_while_training_names_the_file_and_how_to_resume(tmp_path, monkeypatch):
    run_dir = tmp_path / "my runs" / "it's one"
    with monkeypatch.context() as patch:
        full_disk_on_write(patch, "last.npz", after=2)  # the first checkpoints fit
        result = invoke("train", *QUICK, "--checkpoint-every", "1", "-o", run_dir)
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert "\n" not in line and ".partial" not in line, line
    hint = f"xpnn train --resume {shlex.quote(str(run_dir))}"
    assert line == (f"Error: No space left on device: {run_dir / 'last.npz'}; the last "
                    f"checkpoint in {run_dir} is whole: free some space (or fix the folder), "
                    f"then continue with: {hint}"), line
    result = invoke(*shlex.split(hint)[1:], "--no-progress")
    assert result.exit_code == 0, result.output
    assert "done: last epoch test accuracy" in result.stdout


def test_a_full_disk_at_the_first_checkpoint_leaves_nothing(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    full_disk_on_write(monkeypatch, "last.npz", after=0)
    result = invoke("train", *QUICK, "-o", run_dir)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (f"Error: No space left on device: {run_dir / 'last.npz'}; "
                                     f"nothing of the run was kept; free some space (or fix the "
                                     f"folder) and start it again")
    assert not run_dir.exists()


def test_the_resume_hints_are_shell_quoted(tmp_path, monkeypatch):
    run_dir = tmp_path / "a run; rm -rf x"
    original = Trainer.train_step

    def step(self, *args):
        original(self, *args)
        self.stops.signal = signal.SIGTERM

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_step", step)
        result = invoke("train", *QUICK, "-o", run_dir)
    assert result.exit_code == 143, result.output
    assert result.stderr.strip().endswith(
        f"continue with: xpnn train --resume {shlex.quote(str(run_dir))}"), result.stderr
    result = invoke("train", *QUICK, "-o", run_dir)
    assert f"continue it with --resume {shlex.quote(str(run_dir))} or" in result.stderr
