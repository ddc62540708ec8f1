"""The command line on several ranks: how many a CPU run starts by default, which device a rank
takes, starting them (`--processes`), and ending every rank together when one fails."""
import contextlib
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import click

TAIL_CHARS = 1 << 14  # of rank 0's error output, kept to match the other ranks' messages against
STARTED_AS = "XPNN_STARTED_AS"  # set by `start_ranks` for its ranks: the command the user typed


def rank_device(spec):
    """(the `Device` this rank computes on, the job's ranks) for a --device value: on several
    ranks, ``gpu``/``cuda`` is the `local_rank`-th GPU of this rank's host."""
    from xpnn.backend import get_device
    from xpnn.backend.communicator import world
    from xpnn.backend.device import parse_device_name

    ranks = world()
    if ranks.size > 1 and parse_device_name(spec) is not None:
        if ":" in str(spec):
            raise click.UsageError(f"--device {spec} on {ranks.size} ranks would put every rank of "
                                   f"a host on one GPU; use --device gpu (rank i of a host takes "
                                   f"GPU i)")
        spec = f"cuda:{ranks.local_rank}"
    device = get_device(spec)
    return device, world(device)


def default_processes(device_spec, batch_size, workers=None, resume_dir=None):
    """(ranks, note) for `xpnn train` without --processes: on the CPU with mpi4py and mpiexec
    installed, one rank per core (at most one per image of a batch), else 1; a resumed run's
    own count. `note`: a line to show where ranks would help but cannot start, else None."""
    from xpnn.backend import cpu_count
    from xpnn.backend.communicator import launched_size
    from xpnn.backend.device import parse_device_name

    if launched_size() > 1 or parse_device_name(device_spec) is not None or workers is not None:
        return 1, None
    if resume_dir is not None:  # the count the run was trained on
        from xpnn.training.checkpoint import LAST_NAME, load_checkpoint
        try:
            state = load_checkpoint(Path(resume_dir) / LAST_NAME).state
        except Exception:  # noqa: BLE001 (the resume itself reports what is wrong)
            return 1, None
        return (state.ranks if state is not None else 1), None
    count = min(cpu_count(), batch_size)
    if count < 2:
        return 1, None
    if find_mpiexec() is None or importlib.util.find_spec("mpi4py") is None:
        return 1, (f"training on {count} threads; with pip install 'xpnn[mpi]' it would run as "
                   f"{count} ranks, measured faster, with the same results")
    return count, None


def find_mpiexec():
    """The mpiexec beside this Python (the mpich wheel's), else the first on PATH, else None."""
    return shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")


def start_ranks(count):
    """Run this command again as `count` ranks through mpiexec; return its exit code."""
    from xpnn.backend.communicator import launched_size

    if launched_size() > 1:
        raise click.UsageError("--processes starts the ranks itself; under mpiexec leave it out")
    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise click.UsageError(f"--processes {count} needs mpiexec, which is not installed; "
                               f"pip install 'xpnn[mpi]' (mpi4py and the mpich wheel)")
    program = [sys.argv[0]] if sys.argv[0].endswith(".py") else ["-m", "xpnn"]
    # MPICH's launcher SIGKILLs the ranks when one dies; told not to, it sends them SIGUSR1
    options = ["-disable-auto-cleanup"] if is_hydra(mpiexec) else []
    command = [mpiexec, *options, "-n", str(count), sys.executable, *program,
               *without_processes(sys.argv[1:])]
    typed = program_name(click.get_current_context())
    code = run_forwarding_stops(command, env={**os.environ, STARTED_AS: typed})
    if code not in (0, 1, 2, 130, 143):  # 1, 2: an error, printed; 130, 143: stopped, reported
        click.echo(f"Error: the {count} ranks stopped with exit code {code} (the messages above "
                   f"say which rank and why)", err=True)
    return code


def run_forwarding_stops(command, env):
    """Run the launcher `command` in the environment `env`; return its exit code. SIGINT and
    SIGTERM are passed on to it, in a session of its own (a terminal's Ctrl-C reaches it once:
    MPICH's takes a second as "abort at once")."""
    from xpnn.cli.stopping import STOP_SIGNALS

    launcher = subprocess.Popen(command, start_new_session=True, env=env)
    previous = {number: signal.signal(number, lambda number, frame: launcher.send_signal(number))
                for number in STOP_SIGNALS}
    try:
        return launcher.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def program_name(ctx):
    """How the user started this program (`ctx`: a click context), as a command to type again."""
    name = ctx.find_root().info_name
    return f"python {name}" if name.endswith(".py") else name


def continue_command(ctx, ranks, run_dir):
    """The command that continues the run in `run_dir` on `ranks`: the user's own where
    `start_ranks` started these ranks, else this program, under `mpiexec -n N` on N ranks."""
    program = os.environ.get(STARTED_AS)
    if program is None:
        program = program_name(ctx)
        if ranks.size > 1:
            program = f"mpiexec -n {ranks.size} {program}"
    return f"{program} train --resume {shlex.quote(str(run_dir))}"


def is_hydra(mpiexec):
    """Whether `mpiexec` is MPICH's (Hydra), which the mpich wheel ships."""
    try:
        return "HYDRA" in subprocess.run([mpiexec, "--version"], capture_output=True, text=True,
                                         timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False


def without_processes(args):
    """Command-line arguments with any --processes N / --processes=N taken out."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--processes":
            skip = True
        elif not arg.startswith("--processes="):
            kept.append(arg)
    return kept


def run_as_rank(command):
    """Run the click `command` as one rank of an MPI job, then end with the others. Rank 0
    prints its errors as it goes; the others hold theirs back, and once every rank is done rank
    0 prints the held lines it has not printed itself. A rank that fails alone, or finds the
    others gone, prints what it held, waits 10 s for them and aborts the job: never a hang."""
    from xpnn.backend.communicator import RankError, timeout, world
    from xpnn.cli.stopping import Stopped

    try:
        ranks = world()  # made by every rank at the same point: it is a collective
    except RankError as error:
        sys.exit(f"Error: {error}")
    errors = HeldStream(sys.stderr, hold=not ranks.is_root)
    signal.signal(signal.SIGUSR1, lambda number, frame: _another_rank_died(ranks, errors))
    with contextlib.redirect_stderr(errors):
        try:
            command(standalone_mode=True)
            code = 0
        except SystemExit as stop:
            code = stop.code
        except Stopped as stop:  # a signal outside the training loop
            print(stop, file=sys.stderr)
            code = 128 + stop.signal_number
        except BaseException:  # a bug: show it, then end every rank
            traceback.print_exc()
            code = 1
        if not isinstance(code, int):  # sys.exit("message")
            print(code, file=sys.stderr)
            code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    if ranks.wait_for_all(timeout() if code == 0 else 10.0):
        # The launcher may still signal a rank that leaves MPI after another (seen with MPICH);
        # Python's exit restores SIGUSR1's default action (to die), not an ignored signal's.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        printed = set(errors.text.splitlines())
        for text in ranks.gather_text(errors.text if errors.hold else "") or ():
            for line in text.splitlines():
                if line not in printed:  # another rank's own message
                    print(line, file=sys.stderr)
                    printed.add(line)
        sys.stderr.flush()
        sys.exit(code)
    errors.release()
    print(f"Error: rank {ranks.rank} of {ranks.size}: the other ranks did not finish with this "
          f"one; stopping the job", file=sys.stderr, flush=True)
    ranks.abort(code or 1)


class HeldStream:
    """Stands for `stream` (stderr): what is written is held back (`hold`) until `release()`,
    or written through with its last `TAIL_CHARS` kept in `text`."""

    def __init__(self, stream, hold):
        self.stream, self.hold, self.text = stream, hold, ""

    def write(self, text):
        if self.hold:
            self.text += text
        else:
            self.stream.write(text)
            self.text = (self.text + text)[-TAIL_CHARS:]
        return len(text)

    def release(self):
        """Write what was held back, once, and write through from now on."""
        if self.hold:
            self.stream.write(self.text)
            self.stream.flush()
            self.hold, self.text = False, ""

    def __getattr__(self, name):  # flush, fileno, isatty, encoding: the stream's own
        return getattr(self.stream, name)


def _another_rank_died(ranks, errors):
    """SIGUSR1 from MPICH's launcher (`-disable-auto-cleanup`): a rank of the job died; say so
    (after what this rank held back) and end at once."""
    errors.release()
    print(f"Error: rank {ranks.rank} of {ranks.size}: another rank of this job died (mpiexec "
          f"says which, above or below); stopping this one; resume from the last checkpoint "
          f"with --resume", file=errors.stream, flush=True)
    os._exit(1)  # MPI_Finalize would wait for the dead rank forever
