"""One writer per run folder: two `xpnn train` processes into one folder, a `--resume` of a run
that is still training, and what each leaves behind.

The paired-start test runs `PAIRS` pairs (5); with XPNN_LONG_TESTS=1 it runs `LONG_PAIRS` (50),
the bar the run lock was built to (README, "Tests").
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from xpnn.cli import cli
from xpnn.training import load_checkpoint
from xpnn.training.files import LOCK_NAME, FolderLock

REPO = Path(__file__).resolve().parent.parent
LONG = os.environ.get("XPNN_LONG_TESTS") == "1"
PAIRS, LONG_PAIRS = 5, 50
TINY = ["-c", "lenet", "--epochs", "1", "--batch-size", "50", "--limit-train", "100",
        "--limit-test", "50", "--no-progress"]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
RUN_FILES = ["best.npz", "config.yaml", "last.npz", "metrics.csv", "metrics.jsonl"]


def run_files(run_dir):
    """The run folder's files, TensorBoard's event file (where tensorboardX is installed) aside."""
    return sorted(path.name for path in run_dir.iterdir()
                  if not path.name.startswith("events.out.tfevents"))


def train_process(*args, **popen):
    return subprocess.Popen([sys.executable, str(REPO / "run.py"), "train", *map(str, args)],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def holding_process(folder):
    """A process that takes `folder`'s lock, says so on stdout, and sleeps until killed."""
    code = ("import sys, time; from xpnn.training.files import FolderLock; "
            "lock = FolderLock.acquire(sys.argv[1]); print('locked', flush=True); time.sleep(120)")
    process = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=REPO, env=ENV,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def seed_of_config(path):
    return yaml.safe_load(Path(path).read_text())["train"]["seed"]


@pytest.mark.slow
def test_two_runs_started_together_into_one_folder_lose_nothing(tmp_path):
    """Each pair: one run trains, the other is refused in one line (the folder is in use, or
    holds a run already); the folder then holds exactly the winner's run, whole."""
    for pair in range(LONG_PAIRS if LONG else PAIRS):
        run_dir = tmp_path / f"run{pair}"
        processes = [train_process(*TINY, "--seed", seed, "-o", run_dir) for seed in (1, 2)]
        results = [(process.wait(timeout=300), *process.communicate()) for process in processes]
        codes = sorted(code for code, _, _ in results)
        assert codes == [0, 1], results
        (winner,) = [seed for seed, (code, _, _) in zip((1, 2), results) if code == 0]
        (refused,) = [err for code, _, err in results if code == 1]
        lines = refused.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), refused
        assert "Traceback" not in refused
        assert ("is in use: process " in lines[0] and " on host " in lines[0]
                or "already holds a training run" in lines[0]), lines[0]
        assert run_files(run_dir) == RUN_FILES
        assert seed_of_config(run_dir / "config.yaml") == winner
        for name in ("last.npz", "best.npz"):
            assert load_checkpoint(run_dir / name).config["train"]["seed"] == winner
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [record["epoch"] for record in records] == [1]


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = holding_process(run_dir)
    try:
        result = CliRunner().invoke(cli, ["train", *TINY, "-o", str(run_dir)], prog_name="xpnn")
        assert result.exit_code == 1, result.output
        line = result.stderr.strip()
        assert line.startswith("Error: ") and "\n" not in line
        assert f"is in use: process {holder.pid} on host " in line, line
        assert "Traceback" not in result.output
        assert sorted(path.name for path in run_dir.iterdir()) == [LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()


def test_a_second_run_into_a_folder_still_training_is_told_who_trains_it_not_to_resume(tmp_path):
    run_dir = tmp_path / "run"
    assert CliRunner().invoke(cli, ["train", *TINY, "-o", str(run_dir)]).exit_code == 0
    holder = holding_process(run_dir)  # stands for the run, still training (its last.npz saved)
    try:
        result = CliRunner().invoke(cli, ["train", *TINY, "-o", str(run_dir)], prog_name="xpnn")
        assert result.exit_code == 1, result.output
        line = result.stderr.strip()
        assert f"is in use: process {holder.pid} on host " in line, line
        assert "--resume" not in line, line  # resuming it would be refused too, while it trains
    finally:
        holder.kill()
        holder.wait()


def test_resume_of_a_run_still_training_is_refused_and_touches_none_of_its_files(tmp_path):
    run_dir = tmp_path / "run"
    assert CliRunner().invoke(cli, ["train", *TINY, "-o", str(run_dir)]).exit_code == 0
    holder = holding_process(run_dir)  # stands for the run, still training
    in_flight = run_dir / ".last.npz.abc123.partial"  # its checkpoint being written
    in_flight.write_bytes(b"half a checkpoint")
    try:
        result = CliRunner().invoke(cli, ["train", "--resume", str(run_dir), "--no-progress"],
                                    prog_name="xpnn")
        assert result.exit_code == 1, result.output
        line = result.stderr.strip()
        assert line.startswith("Error: ") and "\n" not in line
        assert f"cannot resume {run_dir}: it is still being trained by process {holder.pid}" \
            in line, line
        assert in_flight.read_bytes() == b"half a checkpoint"
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    assert CliRunner().invoke(cli, ["train", *TINY, "-o", str(run_dir)]).exit_code == 0
    holder = holding_process(run_dir)
    holder.send_signal(signal.SIGKILL)  # the OS drops its lock; the file stays
    holder.wait()
    assert (run_dir / LOCK_NAME).exists()
    (run_dir / ".last.npz.dead.partial").write_bytes(b"left by the crash")
    assert FolderLock.holder(run_dir) is None
    result = CliRunner().invoke(cli, ["train", "--resume", str(run_dir), "--no-progress"],
                                prog_name="xpnn")
    assert result.exit_code == 0, result.output
    assert run_files(run_dir) == RUN_FILES


def test_a_new_run_given_up_before_its_first_checkpoint_leaves_nothing(tmp_path):
    from xpnn.backend import CPU
    from xpnn.training import load_config, start_run

    config = load_config("lenet", {"train.epochs": 1})
    run_dir = tmp_path / "new" / "run"
    trainer = start_run(config, CPU, run_dir, limit_train=100, limit_test=50, progress=False)
    assert sorted(path.name for path in run_dir.iterdir()) == [LOCK_NAME, "config.yaml"]
    assert FolderLock.holder(run_dir) is None  # this process holds it
    trainer.folder_lock.release()  # as at a signal before fit() saved anything
    assert not run_dir.exists()
    assert (tmp_path / "new").exists()  # a parent folder is not the run's to remove

    # An existing folder is kept, with what was in it.
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    trainer = start_run(config, CPU, run_dir, limit_train=100, limit_test=50, progress=False)
    trainer.folder_lock.release()
    assert sorted(path.name for path in run_dir.iterdir()) == ["notes.txt"]


def test_the_lock_is_held_for_the_run_and_dropped_when_it_ends(tmp_path, monkeypatch):
    from xpnn.backend import CPU
    from xpnn.training import load_config, resume_run, start_run
    from xpnn.training.trainer import Trainer

    config = load_config("lenet", {"train.epochs": 1})
    run_dir = tmp_path / "run"
    trainer = start_run(config, CPU, run_dir, limit_train=100, limit_test=50, progress=False,
                        echo=lambda line: None)
    seen = []
    original = Trainer.train_step

    def step(self, *args):  # another process looks while the run trains
        seen.append(subprocess.run(
            [sys.executable, "-c", "import sys; from xpnn.training.files import FolderLock; "
             "print(FolderLock.holder(sys.argv[1]))", str(run_dir)],
            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120).stdout.strip())
        return original(self, *args)

    monkeypatch.setattr(Trainer, "train_step", step)
    trainer.fit()
    assert seen and all(f"process {os.getpid()} on host " in text for text in seen), seen
    assert not (run_dir / LOCK_NAME).exists()
    resumed = resume_run(run_dir, CPU, progress=False, echo=lambda line: None)
    assert (run_dir / LOCK_NAME).exists()
    resumed.fit()  # nothing left to do; the lock goes
    assert not (run_dir / LOCK_NAME).exists()


def test_a_run_without_output_takes_the_next_name_when_its_default_is_taken(tmp_path,
                                                                           monkeypatch):
    """Two runs started in the same second without -o: the second takes <name>-2, instead of
    being refused."""
    from xpnn.training import runs

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runs.time, "strftime", lambda pattern: "20260101-120000")
    taken = tmp_path / "runs" / "lenet-20260101-120000"
    taken.mkdir(parents=True)
    holder = holding_process(taken)  # it has just claimed the name, and holds nothing yet
    named, calls = runs.default_run_dir, []

    def default_run_dir(config_path):  # the first look came before the other run's mkdir
        calls.append(config_path)
        return taken if len(calls) == 1 else named(config_path)

    monkeypatch.setattr(runs, "default_run_dir", default_run_dir)
    try:
        result = CliRunner().invoke(cli, ["train", *TINY], prog_name="xpnn")
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 0, result.output
    assert f"run folder {Path('runs') / 'lenet-20260101-120000-2'}:" in result.stdout
    assert (tmp_path / "runs" / "lenet-20260101-120000-2" / "last.npz").exists()
    assert len(calls) == 2 and sorted(path.name for path in taken.iterdir()) == [LOCK_NAME]


def test_a_stop_signal_during_the_release_waits_until_the_lock_file_is_gone(tmp_path,
                                                                             monkeypatch):
    """A SIGTERM that arrives while the lock is given up (seen in CI: a run stopped as it
    finished left its .xpnn.lock) is delivered once the release is done."""
    from xpnn.training import files

    class Stop(Exception):
        pass

    def stop(number, frame):
        raise Stop

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        lock = FolderLock.acquire(tmp_path)
        same_file = files._same_file

        def signalled_midway(fd, path):
            os.kill(os.getpid(), signal.SIGTERM)
            return same_file(fd, path)

        monkeypatch.setattr(files, "_same_file", signalled_midway)
        with pytest.raises(Stop):
            lock.release()
        assert not (tmp_path / LOCK_NAME).exists()
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_stop_signal_caught_by_another_thread_during_the_release_also_waits(tmp_path,
                                                                             monkeypatch):
    """The kernel gives a process's signal to any thread not blocking it (a BLAS or worker
    thread); Python then runs its handler in the main thread. Seen as a flaky failure of the
    test above: a per-thread signal mask let the stop land in the middle of the release."""
    import threading

    from xpnn.training import files

    class Stop(Exception):
        pass

    def stop(number, frame):
        raise Stop

    idle = threading.Event()
    bystander = threading.Thread(target=idle.wait)  # started before the release: no mask
    bystander.start()
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        lock = FolderLock.acquire(tmp_path)
        same_file = files._same_file

        def signalled_in_another_thread(fd, path):
            signal.pthread_kill(bystander.ident, signal.SIGTERM)
            time.sleep(0.05)  # the main thread's next bytecodes run Python's handlers
            return same_file(fd, path)

        monkeypatch.setattr(files, "_same_file", signalled_in_another_thread)
        with pytest.raises(Stop):
            lock.release()
        assert not (tmp_path / LOCK_NAME).exists()
    finally:
        signal.signal(signal.SIGTERM, previous)
        idle.set()
        bystander.join()
