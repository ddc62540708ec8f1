"""Training on several MPI ranks, each a real process started by mpiexec: the same weights as one
process, exact resume after a rank is killed, every rank ending with an error, never a hang.

Skipped where mpi4py or mpiexec is missing (pip install -e ".[dev,mpi]" installs both)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy
import pytest

from test_training import run_folder_files
from xpnn.cli.ranks import without_processes
from xpnn.training import load_checkpoint, read_metrics

pytest.importorskip("mpi4py", reason="training on ranks needs mpi4py (pip install 'xpnn[mpi]')")
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
if MPIEXEC is None:
    pytest.skip("training on ranks needs mpiexec (pip install 'xpnn[mpi]' ships MPICH's)",
                allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent
RUN = [sys.executable, str(REPO / "run.py"), "train"]
# 7 steps of 100 (the last of 50): uneven shards on 3 ranks (34, 33, 33 and 17, 17, 16).
SHORT = ["-c", "resnet", "--epochs", "1", "--limit-train", "650", "--limit-test", "100",
         "--no-progress"]
# Long enough to be killed mid-epoch: 2 epochs of 30 steps, a checkpoint every 4.
LONG = ["-c", "lenet", "--epochs", "2", "--batch-size", "20", "--limit-train", "600",
        "--limit-test", "100", "--checkpoint-every", "4", "--no-progress"]


def ranks(count, *args, timeout=240, env=None):
    """Run `mpiexec -n count run.py train args`; return the completed process (text output)."""
    return subprocess.run([MPIEXEC, "-n", str(count), *RUN, *args], cwd=REPO, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})


def one_process(*args, env=None):
    completed = subprocess.run([*RUN, *args], cwd=REPO, text=True, capture_output=True,
                               timeout=240, env=env)
    assert completed.returncode == 0, completed.stderr
    return completed


def arrays(run_dir):
    checkpoint = load_checkpoint(Path(run_dir) / "last.npz")
    return {**checkpoint.weights, "velocity": checkpoint.optimizer["velocity"]}


def assert_bit_identical(dir_a, dir_b):
    a, b = arrays(dir_a), arrays(dir_b)
    assert a.keys() == b.keys()
    for key in a:
        assert numpy.array_equal(a[key], b[key]), f"{key} differs"


@pytest.mark.slow
@pytest.mark.parametrize("count", [2, 3])
def test_ranks_give_the_weights_of_one_process_on_the_same_global_batch(tmp_path, count):
    done = ranks(count, *SHORT, "-o", str(tmp_path / "ranks"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("done: last epoch test accuracy") == 1, "only rank 0 prints"
    assert f"on {count} ranks (cpu each)" in done.stdout
    assert sorted(path.name for path in (tmp_path / "ranks").iterdir()) == run_folder_files()
    # The rank-order sum makes N ranks the same float operations as N worker threads...
    one_process(*SHORT, "--workers", str(count), "-o", str(tmp_path / "threads"))
    assert_bit_identical(tmp_path / "ranks", tmp_path / "threads")
    assert load_checkpoint(tmp_path / "ranks" / "last.npz").state.ranks == count
    # ... and, after one step, the weights of one thread on the whole batch to float32 rounding.
    first_step = [*SHORT[:4], "--limit-train", "100", "--limit-test", "10"]
    assert ranks(count, *first_step, "-o", str(tmp_path / "step")).returncode == 0
    one_process(*first_step, "--workers", "1", "-o", str(tmp_path / "whole"))
    a, b = arrays(tmp_path / "step"), arrays(tmp_path / "whole")
    for key in a:
        assert numpy.allclose(a[key], b[key], rtol=1e-5, atol=1e-7), key



@pytest.mark.slow
def test_augmented_ranks_warp_each_image_as_one_process_does(tmp_path):
    """Augmentation draws its maps for the whole global batch; each rank warps its shard."""
    augmented = ["-c", "resnet_augment", "--epochs", "1", "--limit-train", "650",
                 "--limit-test", "100", "--no-progress"]
    done = ranks(3, *augmented, "-o", str(tmp_path / "ranks"))
    assert done.returncode == 0, done.stderr
    one_process(*augmented, "--workers", "3", "-o", str(tmp_path / "threads"))
    assert_bit_identical(tmp_path / "ranks", tmp_path / "threads")

def rank_pids(parent):
    """Process ids of the ranks under `parent` (the children of MPICH's proxy below it), in
    rank order (by the PMI_RANK that MPICH gives each)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [parent]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            todo.append(child)
            if Path(f"/proc/{pid}/comm").read_text().startswith("hydra_pmi"):
                found.append(child)
    return sorted(found, key=_pmi_rank)


def _pmi_rank(pid):
    environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(item for item in environment if item.startswith(b"PMI_RANK="))[9:])


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["mpiexec", "--processes"])
def test_a_killed_rank_ends_the_job_in_seconds_and_the_run_resumes_exactly(tmp_path, launcher):
    reference = ranks(2, *LONG, "-o", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr

    run_dir = tmp_path / "run"
    command = ([MPIEXEC, "-n", "2", *RUN, *LONG] if launcher == "mpiexec" else
               [*RUN, *LONG, "--processes", "2"])
    job = subprocess.Popen([*command, "-o", str(run_dir)], cwd=REPO, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if load_checkpoint(run_dir / "last.npz").step >= 8:
                break
        except Exception:
            pass
        time.sleep(0.05)
    pids = rank_pids(job.pid)
    assert len(pids) == 2
    os.kill(pids[1], signal.SIGKILL)
    killed = time.monotonic()
    output, _ = job.communicate(timeout=60)
    assert time.monotonic() - killed < 15, "the job outlived its killed rank"
    assert job.returncode != 0
    assert "Killed (signal 9)" in output, output  # mpiexec names the dead rank's end
    if launcher == "--processes":  # MPICH told to let the survivors speak
        assert "Error: rank 0 of 2: another rank of this job died" in output, output
        assert "Error: the 2 ranks stopped with exit code" in output, output
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)

    wrong = ranks(3, "--resume", str(run_dir), "--no-progress")
    assert wrong.returncode != 0
    message = (f"Error: cannot resume {run_dir} on 3 rank(s): it was trained on 2, and another "
               f"count splits every batch differently; resume it with mpiexec -n 2 (or "
               f"--processes 2)")
    assert wrong.stderr.count(message) == 1, wrong.stderr  # every rank's, printed once
    alone = subprocess.run([*RUN, "--resume", str(run_dir)], cwd=REPO, text=True,
                           capture_output=True, timeout=120)
    assert alone.returncode == 1 and "resume it with mpiexec -n 2" in alone.stderr

    resumed = ranks(2, "--resume", str(run_dir), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("resuming") == 1
    assert_bit_identical(tmp_path / "reference", run_dir)
    assert metrics(run_dir) == metrics(tmp_path / "reference") and len(metrics(run_dir)) == 2


def metrics(run_dir):
    """The run's epoch records, but their times."""
    return [{key: value for key, value in record.items() if key != "seconds"}
            for record in read_metrics(run_dir)]


@pytest.mark.slow
def test_ctrl_c_stops_every_rank_at_one_step_and_rank_0_says_how_to_resume(tmp_path):
    run_dir = tmp_path / "run"
    job = subprocess.Popen([MPIEXEC, "-n", "2", *RUN, *LONG, "-o", str(run_dir)], cwd=REPO,
                           text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run_dir / "last.npz").exists():
        time.sleep(0.05)
    job.send_signal(signal.SIGINT)  # mpiexec passes it to every rank, as a terminal's Ctrl-C
    output, _ = job.communicate(timeout=60)
    assert job.returncode == 130, output
    stopped = load_checkpoint(run_dir / "last.npz")
    message = [line for line in output.splitlines() if line.startswith("SIGINT: stopped")]
    assert message == [f"SIGINT: stopped at epoch {stopped.epoch + 1} step {stopped.step}/30 and "
                       f"saved {run_dir}/last.npz; continue with: mpiexec -n 2 python run.py "
                       f"train --resume {run_dir}"], output


@pytest.mark.slow
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_to_processes_reaches_every_rank(tmp_path, number):
    """`kill` (or Ctrl-C) of `xpnn train --processes 2` stops the ranks it started, saved."""
    run_dir = tmp_path / "run"
    job = subprocess.Popen([*RUN, *LONG, "--processes", "2", "-o", str(run_dir)], cwd=REPO,
                           text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run_dir / "last.npz").exists():
        time.sleep(0.05)
    pids = rank_pids(job.pid)
    assert len(pids) == 2
    job.send_signal(number)
    output, _ = job.communicate(timeout=60)
    assert job.returncode == 128 + number, output
    stopped = load_checkpoint(run_dir / "last.npz")
    assert stopped.epoch < 2, "the ranks trained on after their launcher was stopped"
    assert [line for line in output.splitlines() if line.startswith(f"{number.name}: stopped")] \
        == [f"{number.name}: stopped at epoch {stopped.epoch + 1} step {stopped.step}/30 and "
            f"saved {run_dir}/last.npz; continue with: python run.py train --resume "
            f"{run_dir}"], output  # as typed: --resume starts as many ranks again
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)


def test_an_error_every_rank_meets_is_printed_once_and_a_ranks_own_error_too(tmp_path):
    script = tmp_path / "errors.py"
    script.write_text(
        "import sys, warnings\n"
        "from xpnn.backend.communicator import world\n"
        "rank = world().rank\n"
        "print('Error: the same on every rank', file=sys.stderr)\n"
        "print(f'Error: rank {rank} has its own trouble', file=sys.stderr)\n"
        "sys.exit(1)\n")
    program = [MPIEXEC, "-n", "3", sys.executable, "-c",
               f"import runpy; from xpnn.cli.ranks import run_as_rank; "
               f"run_as_rank(lambda standalone_mode: runpy.run_path({str(script)!r}))"]
    done = subprocess.run(program, text=True, capture_output=True, timeout=120)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines.count("Error: the same on every rank") == 1, done.stderr
    for rank in range(3):
        assert lines.count(f"Error: rank {rank} has its own trouble") == 1, done.stderr


@pytest.mark.slow
def test_a_rank_that_stops_answering_ends_every_rank_with_an_error(tmp_path):
    script = tmp_path / "stuck.py"
    script.write_text(
        "import time, numpy\n"
        "from xpnn.backend.communicator import world\n"
        "ranks = world()\n"
        "buffer = numpy.ones(10, dtype=numpy.float32)\n"
        "if ranks.rank == 1:\n"
        "    time.sleep(600)  # alive, but never joins the sum\n"
        "ranks.sum_in_rank_order(buffer)\n")
    program = [MPIEXEC, "-n", "2", sys.executable, "-c",
               f"import sys, runpy; sys.path.insert(0, {str(REPO)!r}); "
               f"from xpnn.cli.ranks import run_as_rank; "
               f"run_as_rank(lambda standalone_mode: runpy.run_path({str(script)!r}))"]
    started = time.monotonic()
    done = subprocess.run(program, text=True, capture_output=True, timeout=120,
                          env={**os.environ, "XPNN_RANK_TIMEOUT": "2"})
    assert time.monotonic() - started < 30
    assert done.returncode != 0
    assert ("rank 0 of 2: no answer from the other ranks in a sum (the gradients', or the "
            "loss's) for 2 s (a rank stopped or hangs)") in done.stderr, done.stderr


def test_a_numbered_gpu_on_several_ranks_is_refused_on_every_rank_in_one_message():
    done = ranks(2, *SHORT, "--device", "cuda:1")
    assert done.returncode == 2
    assert done.stderr.count("Error: --device cuda:1 on 2 ranks would put every rank of a host "
                             "on one GPU; use --device gpu (rank i of a host takes GPU i)") == 1
    assert done.stderr.count("Usage:") == 1, done.stderr


def test_processes_flag_is_taken_out_of_the_ranks_command_line():
    assert without_processes(["-c", "lenet", "--processes", "2", "--epochs", "1"]) == [
        "-c", "lenet", "--epochs", "1"]
    assert without_processes(["--processes=3", "-c", "lenet"]) == ["-c", "lenet"]


@pytest.mark.slow
def test_processes_starts_the_ranks_itself(tmp_path):
    done = one_process(*SHORT, "--processes", "2", "-o", str(tmp_path / "run"))
    assert "on 2 ranks (cpu each)" in done.stdout
    assert load_checkpoint(tmp_path / "run" / "last.npz").state.ranks == 2


@pytest.mark.slow
def test_xpnn_processes_makes_ranks_the_default_and_ranks_inherit_it_harmlessly(tmp_path):
    ranked = {**os.environ, "XPNN_PROCESSES": "2"}
    done = one_process(*SHORT, "-o", str(tmp_path / "run"), env=ranked)
    assert "on 2 ranks (cpu each)" in done.stdout
    under_mpiexec = ranks(2, *SHORT, "-o", str(tmp_path / "mpiexec"), env=ranked)
    assert under_mpiexec.returncode == 0, under_mpiexec.stderr
    assert "on 2 ranks (cpu each)" in under_mpiexec.stdout


@pytest.mark.slow
def test_the_rank_benchmark_runs_and_reports_every_column(tmp_path):
    results = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.ranks_vs_torch", "--configs",
                           "lenet", "--batch-sizes", "100", "--steps", "2", "--warmup", "1",
                           "--ours-only", "--json", str(results)], cwd=REPO, text=True,
                          capture_output=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "2 ranks ms" in done.stdout and "all-reduce share" in done.stdout
    row = json.loads(results.read_text())["rows"][0]
    assert all(row[key]["ms"] > 0 for key in ("ranks_n", "ranks_1", "threads"))
    assert 0 <= row["ranks_n"]["sum_ms"] <= row["ranks_n"]["ms"]


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the default launch of one core is "
                    "one process; this test needs 2 cores")
def test_a_cpu_run_starts_one_rank_per_core_by_default_and_resumes_on_as_many(tmp_path):
    two_cores = set(sorted(os.sched_getaffinity(0))[:2])
    default = {key: value for key, value in os.environ.items() if key != "XPNN_PROCESSES"}
    done = subprocess.run([*RUN, *SHORT, "--epochs", "2", "-o", str(tmp_path / "run")], cwd=REPO,
                          text=True, capture_output=True, timeout=240, env=default,
                          preexec_fn=lambda: os.sched_setaffinity(0, two_cores))
    assert done.returncode == 0, done.stderr
    assert "on 2 ranks (cpu each)" in done.stdout
    assert load_checkpoint(tmp_path / "run" / "last.npz").state.ranks == 2
    resumed = subprocess.run([*RUN, "--resume", str(tmp_path / "run"), "--epochs", "3",
                              "--no-progress"], cwd=REPO, text=True, capture_output=True,
                             timeout=240, env=default,
                             preexec_fn=lambda: os.sched_setaffinity(0, {min(two_cores)}))
    assert resumed.returncode == 0, resumed.stderr
    assert "on 2 ranks (cpu each)" in resumed.stdout  # its own count, not this one core's
