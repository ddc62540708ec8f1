"""SIGINT and SIGTERM at any moment of `xpnn train`: exit 130 or 143, no traceback, and either
nothing written or a run that resumes.

The random-moment test sends `CASES` signals (12); XPNN_LONG_TESTS=1 sends `LONG_CASES` (100).
"Any moment" starts at the program's first instruction: the test waits until the process
catches SIGTERM (its first act) before it counts the delay, since before that the interpreter
itself is starting and the OS's default actions apply.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy
import pytest

from xpnn.training import load_checkpoint

REPO = Path(__file__).resolve().parent.parent
LONG = os.environ.get("XPNN_LONG_TESTS") == "1"
CASES, LONG_CASES = 12, 100
TINY = ["train", "-c", "lenet", "--epochs", "1", "--batch-size", "50", "--limit-train", "200",
        "--limit-test", "50", "--checkpoint-every", "1", "--no-progress"]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
ENTRY_POINTS = [[sys.executable, str(REPO / "run.py")], [sys.executable, "-m", "xpnn"],
                [str(Path(sys.executable).with_name("xpnn"))]]


def catches_sigterm(pid):
    """Whether process `pid` has a handler for SIGTERM (from /proc/PID/status's SigCgt)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(int(line.split()[1], 16) for line in status.splitlines()
                if line.startswith("SigCgt:"))
    return bool(mask & (1 << (signal.SIGTERM - 1)))


def test_importing_the_entry_point_installs_the_handlers_before_anything_heavy():
    """Deterministic: when click, NumPy or PyYAML is first imported, SIGINT and SIGTERM are
    already handled by xpnn (on the old code, `import xpnn.cli` imported click first)."""
    code = """
import signal, sys
seen = set()
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name in ("click", "numpy", "yaml") and name not in seen:
            seen.add(name)
            handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
            ours = all(h not in (signal.SIG_DFL, signal.default_int_handler) for h in handlers)
            print("import", name, "handled" if ours else "UNHANDLED", flush=True)
        return None
sys.meta_path.insert(0, Spy())
sys.argv = ["xpnn", "describe", "-c", "lenet"]
from xpnn.cli import main
main()
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=120)
    imports = sorted(line for line in done.stdout.splitlines() if line.startswith("import "))
    assert imports == [f"import {name} handled" for name in ("click", "numpy", "yaml")], \
        done.stdout + done.stderr


def test_a_signal_before_any_work_exits_with_its_code_in_one_line(tmp_path):
    for number, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        process = subprocess.Popen([*ENTRY_POINTS[0], *TINY, "-o", str(tmp_path / "run")],
                                   cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not catches_sigterm(process.pid) and time.monotonic() < deadline:
            time.sleep(0.001)
        process.send_signal(number)
        out, err = process.communicate(timeout=120)
        assert process.returncode == code, (out, err)
        assert "Traceback" not in err and "Aborted" not in err
        assert err.strip() == f"{signal.Signals(number).name}: stopped", err
        assert not (tmp_path / "run").exists()


def time_a_run(run_dir):
    """Seconds from the moment a tiny run catches SIGTERM to its exit."""
    process = subprocess.Popen([*ENTRY_POINTS[0], *TINY, "-o", str(run_dir)], cwd=run_dir.parent,
                               env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not catches_sigterm(process.pid) and process.poll() is None:
        time.sleep(0.001)
    started = time.monotonic()
    assert process.wait(timeout=300) == 0
    return time.monotonic() - started


@pytest.mark.slow
def test_a_stop_signal_at_any_moment_leaves_nothing_or_a_run_that_resumes(tmp_path):
    rng = numpy.random.default_rng(21)
    lifetime = time_a_run(tmp_path / "timed")  # the machine's speed now, load included
    outcomes = []
    cases = LONG_CASES if LONG else CASES
    for case in range(cases):
        number = (signal.SIGINT, signal.SIGTERM)[case % 2]
        run_dir = tmp_path / f"run{case}"
        process = subprocess.Popen([*ENTRY_POINTS[case % 3], *TINY, "-o", str(run_dir)],
                                   cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not catches_sigterm(process.pid) and time.monotonic() < deadline:
            time.sleep(0.001)
        # from the first instruction to the exit: one random moment in each of `cases` equal
        # stretches, so both early and late moments are always tried
        time.sleep((case + rng.uniform()) / cases * 1.1 * lifetime)
        ended_before = process.poll() is not None
        process.send_signal(number)
        out, err = process.communicate(timeout=120)
        context = f"case {case}: {signal.Signals(number).name}\n{out}\n{err}"
        assert "Traceback" not in err and "Aborted" not in err, context
        if process.returncode == 0:  # it had finished, or was exiting, when the signal came
            assert "done: " in out, context
        else:
            assert not ended_before, context
            assert process.returncode == 128 + number, context
            lines = err.strip().splitlines()  # none when it came as the program exited
            assert len(lines) == 1 or not lines and "done: " in out, context
        assert not list(run_dir.glob(".*")), context  # no lock, no temporary left
        if run_dir.exists():  # a run folder is a run that resumes (or one that is done)
            load_checkpoint(run_dir / "last.npz")
            resumed = subprocess.run([*ENTRY_POINTS[0], "train", "--resume", str(run_dir),
                                      "--no-progress"], cwd=tmp_path, env=ENV,
                                     capture_output=True, text=True, timeout=300)
            assert resumed.returncode == 0, context + resumed.stderr
            outcomes.append("resumed")
        else:
            outcomes.append("nothing written")
    assert outcomes.count("resumed") >= 1 and outcomes.count("nothing written") >= 1, outcomes


def test_a_signal_while_a_resume_starts_says_how_to_continue(tmp_path, monkeypatch):
    """A signal after `train --resume` began, before training: the run is as it was, and the
    line says how to go on (the signal is raised where the run is being loaded)."""
    from click.testing import CliRunner

    import xpnn.cli as entry
    import xpnn.training
    from xpnn.cli import cli
    from xpnn.cli.stopping import Stopped

    run_dir = tmp_path / "my run"
    assert CliRunner().invoke(cli, [*TINY, "-o", str(run_dir)]).exit_code == 0

    def loading(*args, **kwargs):
        raise Stopped(signal.SIGINT)

    monkeypatch.setattr(xpnn.training, "resume_run", loading)
    with pytest.raises(Stopped) as caught:
        CliRunner().invoke(cli, ["train", "--resume", str(run_dir)], catch_exceptions=False)
    assert caught.value.run_dir == run_dir
    monkeypatch.setattr(sys, "argv", ["/somewhere/xpnn/__main__.py"])
    assert entry._describe_stop(caught.value) == (
        f"SIGINT: stopped; the run can be continued with: python -m xpnn train --resume "
        f"'{run_dir}'")
