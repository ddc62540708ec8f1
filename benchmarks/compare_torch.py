"""Our training step against PyTorch's on the CPU, measured fairly, in one run.

    python -m benchmarks.compare_torch              # lenet, resnet, resnet_deep x batch 100, 500
    python -m benchmarks.compare_torch --configs resnet --batch-sizes 100 --rounds 7
    python -m benchmarks.compare_torch --ours-only               # no PyTorch needed
    python -m benchmarks.compare_torch --markdown --json results.json

How it measures (benchmarks/README.md says why):
- Each side runs in its own worker process (ours: NumPy/OpenBLAS; PyTorch: its own threads), so
  neither's libraries, threads or memory are in the other's process.
- Alternated phase: per (config, batch) both workers build the network once, then take turns for
  `--rounds` rounds (ours then PyTorch, then PyTorch then ours, ...); a turn is `--warmup`
  untimed steps then `--steps` timed ones. Before each turn the parent waits `--gap` seconds, so
  the other side's idle threads stop spinning (OpenBLAS's busy-wait about 0.1 s after each
  matmul; on 2 cores that steals the CPU from whoever runs next: PyTorch's lenet step went from
  6.7 to 73 ms when alternated with NumPy in one process), and then until the machine is quiet
  (`--wait-quiet`). A turn during which other processes used more than `--max-others` cores is
  redone (`--retries`).
- Alone phase: each side again in a fresh process with the other gone, its steps back to back;
  that process's peak RSS (a short training run alone) is the memory figure.
- Figures are medians over all timed steps; ratio = ours / PyTorch (>1: we are slower).
  These 2-core machines are shared: medians move 5-25 % between runs; compare runs, not steps.
"""
import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = ("lenet", "resnet", "resnet_deep")
DEFAULT_BATCH_SIZES = (100, 500)
SIDES = ("ours", "torch")


# -- the worker: one side, in its own process -------------------------------------------------

def _make_runner(side, config, batch_size, seed, workers=None):
    if side == "ours":
        from xpnn.tools.bench import StepBench
        return StepBench(config, "cpu", batch_size, seed, workers=workers)
    from benchmarks.torch_nets import TorchTrainingStep
    return TorchTrainingStep(config, batch_size, seed)


def _worker_main(side):
    """Serve JSON-line requests on stdin: setup, run, memory, quit. Replies on the real stdout;
    anything else the libraries print goes to stderr."""
    from xpnn.tools.bench import cpu_usage, current_rss_mib, peak_rss_mib, usage_per_step

    reply_stream = sys.stdout
    sys.stdout = sys.stderr
    start_rss = current_rss_mib()
    runner = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            op = request["op"]
            if op == "setup":
                start_rss = current_rss_mib()
                runner = _make_runner(side, request["config"], request["batch_size"],
                                      request.get("seed", 0), request.get("workers"))
                reply = {"ok": True, "workers": getattr(runner, "workers", None)}
            elif op == "run":
                runner.timed_steps(request["warmup"])
                before = cpu_usage()
                ms = runner.timed_steps(request["steps"])
                loss = runner.loss
                reply = {"ms": ms, "loss": float(getattr(loss, "detach", lambda: loss)()),
                         **usage_per_step(before, cpu_usage(), sum(ms), len(ms))}
            elif op == "memory":
                reply = {"peak_rss_mib": peak_rss_mib(), "start_rss_mib": start_rss}
            elif op == "quit":
                break
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception:  # report to the parent, which raises with the traceback
            reply = {"error": traceback.format_exc()}
        reply_stream.write(json.dumps(reply) + "\n")
        reply_stream.flush()


class Worker:
    """A worker process for one side; methods send one request and return its reply."""

    def __init__(self, side, env=None):
        self.side = side
        child_env = {**os.environ, **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.compare_torch", "--worker", side],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
            env=child_env)

    def request(self, **request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.side} worker exited (code {self.process.wait()}); "
                               f"its stderr is above")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the {self.side} worker failed:\n{reply['error']}")
        return reply

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.close()
            except BrokenPipeError:
                pass
            self.process.wait(timeout=60)


# -- how busy the machine is -------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def system_busy_seconds():
    """CPU seconds all cores have spent busy since boot (idle and iowait excluded), or None."""
    try:
        with open("/proc/stat") as file:
            fields = [int(v) for v in file.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICKS  # user nice system idle iowait irq softirq steal


def process_cpu_seconds(pid):
    """CPU seconds (user + system, all threads) process `pid` has used, or None."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def wait_for_quiet(limit_s, threshold=0.15, window_s=0.25):
    """Wait until the machine's load over `window_s` is below `threshold` cores (at most
    `limit_s` seconds); return the seconds waited. Other users' work makes timings noisy."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        busy = system_busy_seconds()
        if busy is None:
            break
        time.sleep(window_s)
        if (system_busy_seconds() - busy) / window_s < threshold:
            break
    return time.perf_counter() - started


class LoadMeter:
    """Cores used by everything but `pid` (and this process) while a turn runs."""

    def __init__(self, pid):
        self.pid = pid

    def __enter__(self):
        self.start = (time.perf_counter(), system_busy_seconds(), process_cpu_seconds(self.pid),
                      time.process_time())
        return self

    def __exit__(self, *exc_info):
        end = (time.perf_counter(), system_busy_seconds(), process_cpu_seconds(self.pid),
               time.process_time())
        if None in self.start or None in end:
            self.others_cores = float("nan")
            return
        wall, busy, worker, parent = (b - a for a, b in zip(self.start, end))
        self.others_cores = max(0.0, (busy - worker - parent) / wall)


# -- measuring --------------------------------------------------------------------------------

def _load_config(name):
    import yaml

    path = Path(name)
    if not path.suffix:
        path = REPO_ROOT / "configs" / f"{name}.yaml"
    with open(path) as file:
        return yaml.safe_load(file)


def measure_pair(config, batch_size, sides, args, log):
    """Alternated and alone timings (ms lists), peak RSS and final losses for one config and batch.

    Returns {side: {"alternated": [ms...], "round_medians": [one per round], "alone": [ms...],
    "peak_rss_mib", "start_rss_mib", "losses": [...],
    "others_cores": [one per turn: cores other processes used meanwhile]}}.
    """
    results = {side: {"alternated": [], "round_medians": [], "alone": [], "losses": [],
                      "others_cores": []} for side in sides}

    def turn(worker, steps):
        """One turn of `worker`; redone (up to --retries times) while other processes used more
        than --max-others cores during it."""
        for attempt in range(args.retries + 1):
            time.sleep(args.gap)
            wait_for_quiet(args.wait_quiet, threshold=args.max_others)
            with LoadMeter(worker.process.pid) as meter:
                reply = worker.request(op="run", warmup=args.warmup, steps=steps)
            if not meter.others_cores > args.max_others:
                break
            if attempt < args.retries:
                log(f"    ({worker.side} turn redone: other processes used "
                    f"{meter.others_cores:.2f} cores during it)")
        results[worker.side]["losses"].append(reply["loss"])
        results[worker.side]["others_cores"].append(meter.others_cores)
        for key in ("cores_used", "system_ms_per_step", "page_faults_per_step"):
            results[worker.side].setdefault(key, []).append(reply[key])
        return reply["ms"]

    env = {"ours": _ours_env(args), "torch": {}}
    workers = {side: Worker(side, env[side]) for side in sides}
    try:
        for worker in workers.values():
            worker.request(op="setup", config=config, batch_size=batch_size, seed=args.seed,
                           workers=args.workers)
        if len(sides) > 1:
            for round_index in range(args.rounds):
                order = sides if round_index % 2 == 0 else sides[::-1]
                for side in order:
                    ms = turn(workers[side], args.steps)
                    results[side]["alternated"].extend(ms)
                    results[side]["round_medians"].append(statistics.median(ms))
                log(f"    round {round_index + 1}/{args.rounds}: " + ", ".join(
                    f"{side} {statistics.median(results[side]['alternated'][-args.steps:]):.1f} ms"
                    f" (others used {results[side]['others_cores'][-1]:.2f} cores)"
                    for side in sides))
    finally:
        for worker in workers.values():
            worker.close()
    for side in sides:  # alone: a fresh process each, the other side gone
        worker = Worker(side, env[side])
        try:
            worker.request(op="setup", config=config, batch_size=batch_size, seed=args.seed,
                           workers=args.workers)
            results[side]["alone"] = turn(worker, args.alone_steps)
            results[side].update(worker.request(op="memory"))
        finally:
            worker.close()
        log(f"    {side} alone: {statistics.median(results[side]['alone']):.1f} ms "
            f"(others used {results[side]['others_cores'][-1]:.2f} cores), "
            f"peak RSS {results[side]['peak_rss_mib']:.0f} MiB, "
            f"{results[side]['cores_used'][-1]:.2f} cores busy, "
            f"{results[side]['system_ms_per_step'][-1]:.1f} ms/step in the kernel, "
            f"{results[side]['page_faults_per_step'][-1]:.0f} page faults/step")
    return results


def _ours_env(args):
    if args.openblas_timeout is None:
        return {}
    return {"OPENBLAS_THREAD_TIMEOUT": str(args.openblas_timeout)}


def _median(values):
    return statistics.median(values) if values else float("nan")


# -- the machine --------------------------------------------------------------------------------

def machine_info():
    """CPU model, cores, Python, NumPy and its OpenBLAS, PyTorch version, load average."""
    import importlib.metadata

    import numpy

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as file:
            cpu = next(line.split(":", 1)[1].strip() for line in file
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = "unknown"
    try:
        config = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{config['name']} {config['version']}"
    except Exception:
        pass
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "not installed"
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu, "cores": affinity, "blas_kernel": _openblas_corename(),
        "python": platform.python_version(), "numpy": numpy.__version__, "blas": blas,
        "torch": torch_version, "load_average": os.getloadavg(),
        "OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT", "unset"),
    }


def _openblas_corename():
    """The kernel family OpenBLAS picked at run time (e.g. Haswell), or 'unknown'."""
    import ctypes
    import glob

    import numpy

    folder = Path(numpy.__file__).parent.parent / "numpy.libs"
    for path in glob.glob(str(folder / "*openblas*")):
        library = ctypes.CDLL(path)
        for symbol in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                       "openblas_get_corename64_", "openblas_get_corename"):
            function = getattr(library, symbol, None)
            if function is not None:
                function.restype = ctypes.c_char_p
                return function().decode()
    return "unknown"


# -- reporting ----------------------------------------------------------------------------------

def summary_rows(all_results):
    """One dict per (config, batch): medians, ratios, peak RSS."""
    rows = []
    for (name, batch_size), results in all_results:
        ours, theirs = results["ours"], results.get("torch")
        row = {"config": name, "batch": batch_size,
               "ours_alt": _median(ours["alternated"]), "ours_alone": _median(ours["alone"]),
               "ours_rss": ours.get("peak_rss_mib"), "ours_start_rss": ours.get("start_rss_mib"),
               "others_cores": max(statistics.fmean(r["others_cores"]) for r in results.values()),
               "ours_cores_used": statistics.fmean(ours["cores_used"]),
               "ours_system_ms": statistics.fmean(ours["system_ms_per_step"]),
               "ours_page_faults": statistics.fmean(ours["page_faults_per_step"])}
        if theirs:
            row.update(torch_alt=_median(theirs["alternated"]),
                       torch_alone=_median(theirs["alone"]), torch_rss=theirs.get("peak_rss_mib"),
                       torch_start_rss=theirs.get("start_rss_mib"),
                       torch_cores_used=statistics.fmean(theirs["cores_used"]),
                       torch_system_ms=statistics.fmean(theirs["system_ms_per_step"]),
                       torch_page_faults=statistics.fmean(theirs["page_faults_per_step"]))
            # median of the rounds' ratios: each compares two turns taken seconds apart, so slow
            # drifts in the machine's speed cancel
            row["ratio_alt"] = statistics.median(
                a / b for a, b in zip(ours["round_medians"], theirs["round_medians"]))
            row["ratio_alone"] = row["ours_alone"] / row["torch_alone"]
        rows.append(row)
    return rows


def format_table(rows, markdown=False, max_others=0.2):
    """The main table; a load above `max_others` cores is marked "(busy)": suspect figures."""
    with_torch = "torch_alt" in rows[0]
    if with_torch:
        header = ["config", "batch", "ours ms (alt)", "PyTorch ms (alt)", "ratio (alt)",
                  "ours ms (alone)", "PyTorch ms (alone)", "ratio (alone)",
                  "peak RSS ours MiB", "peak RSS PyTorch MiB", "others' load"]
    else:
        header = ["config", "batch", "ours ms (alone)", "peak RSS ours MiB", "others' load"]
    lines = []
    for row in rows:
        if with_torch:
            cells = [row["config"], str(row["batch"]), f"{row['ours_alt']:.1f}",
                     f"{row['torch_alt']:.1f}", f"{row['ratio_alt']:.2f}",
                     f"{row['ours_alone']:.1f}", f"{row['torch_alone']:.1f}",
                     f"{row['ratio_alone']:.2f}", f"{row['ours_rss']:.0f}",
                     f"{row['torch_rss']:.0f}"]
        else:
            cells = [row["config"], str(row["batch"]), f"{row['ours_alone']:.1f}",
                     f"{row['ours_rss']:.0f}"]
        busy = " (busy)" if row["others_cores"] > max_others else ""
        cells.append(f"{row['others_cores']:.2f}{busy}")
        lines.append(cells)
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(cells[i]) for cells in lines)) for i, h in enumerate(header)]
    out = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    out += ["  ".join(c.rjust(w) for c, w in zip(cells, widths)) for cells in lines]
    return "\n".join(out)


def format_usage_table(rows):
    """How each side used the CPU over all its timed turns: cores busy (CPU time / wall time,
    spinning threads included), ms per step in the kernel, minor page faults per step."""
    sides = [("ours", "ours")] + ([("torch", "PyTorch")] if "torch_alt" in rows[0] else [])
    header = ["config", "batch"] + [f"{label} {what}" for _, label in sides
                                    for what in ("cores busy", "kernel ms/step", "faults/step")]
    lines = [header]
    for row in rows:
        cells = [row["config"], str(row["batch"])]
        for key, _ in sides:
            cells += [f"{row[key + '_cores_used']:.2f}", f"{row[key + '_system_ms']:.1f}",
                      f"{row[key + '_page_faults']:.0f}"]
        lines.append(cells)
    widths = [max(len(cells[i]) for cells in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(cells, widths)) for cells in lines)


# -- command line -------------------------------------------------------------------------------

def _csv(kind):
    return lambda text: [kind(item) for item in text.split(",") if item]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare_torch", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=_csv(str), default=list(DEFAULT_CONFIGS),
                        help="comma-separated config names (configs/NAME.yaml) or paths")
    parser.add_argument("--batch-sizes", type=_csv(int), default=list(DEFAULT_BATCH_SIZES))
    parser.add_argument("--rounds", type=int, default=5, help="alternated turns per side")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per turn")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before each turn")
    parser.add_argument("--alone-steps", type=int, default=20,
                        help="timed steps in the alone phase (also the memory run)")
    parser.add_argument("--gap", type=float, default=0.3,
                        help="seconds of quiet before each turn, for spinning threads to sleep")
    parser.add_argument("--wait-quiet", type=float, default=5.0, metavar="SECONDS",
                        help="before each turn, wait up to this long for other processes to "
                             "leave the CPUs idle (0: do not wait)")
    parser.add_argument("--max-others", type=float, default=0.2, metavar="CORES",
                        help="redo a turn if other processes used more than this many cores "
                             "during it")
    parser.add_argument("--retries", type=int, default=3, help="redos per turn, at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ours-only", action="store_true", help="skip PyTorch")
    parser.add_argument("--workers", type=int, default=None,
                        help="our DataParallel worker threads (default: one per core, as "
                             "training runs; 0: the bare network with multi-threaded BLAS)")
    parser.add_argument("--openblas-timeout", type=int, default=None,
                        help="OPENBLAS_THREAD_TIMEOUT for our worker (default: leave unset)")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--json", metavar="PATH", help="write every step time and the summary")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.rounds, args.steps, args.alone_steps) < 1 or args.warmup < 0 or args.gap < 0:
        parser.error("--rounds, --steps and --alone-steps must be >= 1; --warmup, --gap >= 0")
    return args


def _torch_missing_reason():
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        from benchmarks.torch_nets import TORCH_INSTALL_HINT
        return (f"PyTorch is not installed, so there is nothing to compare against. Install it "
                f"with `{TORCH_INSTALL_HINT}`, or time our side alone with --ours-only.")
    return None


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return _worker_main(args.worker)
    sides = ("ours",) if args.ours_only else SIDES
    if not args.ours_only and (reason := _torch_missing_reason()):
        print(reason, file=sys.stderr)
        return 2

    def log(message):
        print(message, file=sys.stderr, flush=True)

    machine = machine_info()
    log("machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()))
    all_results = []
    started = time.perf_counter()
    for name in args.configs:
        config = _load_config(name)
        for batch_size in args.batch_sizes:
            log(f"{name}, batch {batch_size}:")
            results = measure_pair(config, batch_size, sides, args, log)
            for side in sides:
                bad = [loss for loss in results[side]["losses"] if not math.isfinite(loss)]
                if bad:
                    log(f"    WARNING: {side} loss became {bad[0]}: timings of a diverged "
                        f"network are not trustworthy")
            all_results.append(((name, batch_size), results))
    rows = summary_rows(all_results)
    machine["load_average_end"] = os.getloadavg()
    print(f"\nMedian ms per training step (zero_grad, forward, loss, backward, step), float32, "
          f"{machine['cores']} cores, {time.perf_counter() - started:.0f} s in all.")
    if len(sides) > 1:
        print(f"alt: the two sides alternated, {args.rounds} turns x {args.steps} steps each "
              f"(ratio: the median of the rounds' ratios); alone: {args.alone_steps} steps in a "
              f"fresh process with the other side gone.")
    print("ratio = ours / PyTorch; peak RSS: the whole alone process, imports included; others' "
          f"load: mean cores other processes used while a side was timed (worse side; marked "
          f"(busy) above {args.max_others}: suspect figures).\n")
    print(format_table(rows, max_others=args.max_others))
    print("\nCPU use while timed (cores busy = CPU time / wall time, spinning threads included; "
          "kernel time is mostly page faults on freshly allocated arrays):")
    print(format_usage_table(rows))
    if args.markdown:
        print()
        print(format_table(rows, markdown=True, max_others=args.max_others))
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"machine": machine, "args": vars(args), "summary": rows,
                       "runs": [{"config": n, "batch": b, "results": r}
                                for (n, b), r in all_results]}, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
