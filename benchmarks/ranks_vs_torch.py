"""Our CPU training step on MPI ranks against PyTorch's on the same cores, in one run.

    python -m benchmarks.ranks_vs_torch                   # lenet, resnet, resnet_deep x b100, b500
    python -m benchmarks.ranks_vs_torch --configs lenet --batch-sizes 100 --steps 5 --ours-only
    python -m benchmarks.ranks_vs_torch --markdown --json results.json

For each (config, batch size), one after another, each in its own processes with nothing else
of ours running:
- `ranks N`: `mpiexec -n N` ranks (default 2), one worker thread each, every rank on its slice of
  the global batch, gradients summed in rank order (`backend.communicator`), exactly as
  `xpnn train` on N ranks; the step time is rank 0's, the all-reduce's share is the time rank 0
  spends in the gradient sum (waiting for the slower rank included) over its step time;
- `ranks 1`: the same step on one rank (one thread, the whole batch): scaling efficiency is
  t(1) / (N t(N));
- `threads`: one process with `nets.DataParallel` on N worker threads (`xpnn train`'s default);
- `torch`: PyTorch 2.13's step on its default threads (`benchmarks.torch_nets`).
Medians over `--steps` timed steps after `--warmup` untimed ones. ratio = ranks N / torch (> 1:
we are slower). The machine must be otherwise quiet: nothing here waits for it to be.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = ("lenet", "resnet", "resnet_deep")
DEFAULT_BATCH_SIZES = (100, 500)


# -- one side, in its own process(es): prints one JSON line (rank 0 only) ------------------------

def _rank_worker(config_name, batch_size, steps, warmup, workers):
    """Time the step `xpnn train` takes on this process's rank (or threads, on one rank)."""
    from xpnn.backend.communicator import world
    from xpnn.tools.bench import StepBench
    from xpnn.training import load_config

    ranks = world()
    runner = StepBench(load_config(config_name), "cpu", batch_size, seed=0, workers=workers,
                       ranks=ranks)
    summing = []
    sum_in_rank_order = ranks.sum_in_rank_order

    def timed_sum(buffer):  # the step's gradient sum, timed
        started = time.perf_counter()
        sum_in_rank_order(buffer)
        summing.append((time.perf_counter() - started) * 1e3)

    ranks.sum_in_rank_order = timed_sum
    for _ in range(warmup):
        runner.step()
    ranks.wait_for_all(600)
    del summing[:]
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        runner.step()
        times.append((time.perf_counter() - started) * 1e3)
    if ranks.is_root:
        print(json.dumps({"ms": statistics.median(times), "sum_ms": statistics.median(summing),
                          "loss": float(runner.loss)}), flush=True)


def _torch_worker(config_name, batch_size, steps, warmup):
    from benchmarks.torch_nets import TorchTrainingStep
    from xpnn.training import load_config

    runner = TorchTrainingStep(load_config(config_name), batch_size, seed=0)
    runner.timed_steps(warmup)
    print(json.dumps({"ms": statistics.median(runner.timed_steps(steps))}), flush=True)


# -- the parent ---------------------------------------------------------------------------------

def _measure(prefix, side, config, batch_size, args, workers=1):
    command = [*prefix, sys.executable, "-m", "benchmarks.ranks_vs_torch", "--worker", side,
               "--configs", config, "--batch-sizes", str(batch_size), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--worker-threads", str(workers)]
    done = subprocess.run(command, cwd=REPO_ROOT, text=True, capture_output=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(config, batch_size, args, mpiexec, log):
    row = {"config": config, "batch_size": batch_size, "ranks": args.ranks}
    row["ranks_n"] = _measure([mpiexec, "-n", str(args.ranks)], "ranks", config, batch_size, args)
    row["ranks_1"] = _measure([], "ranks", config, batch_size, args)
    row["threads"] = _measure([], "ranks", config, batch_size, args, workers=args.ranks)
    row["torch"] = None if args.ours_only else _measure([], "torch", config, batch_size, args)
    log(f"{config} b{batch_size}: " + ", ".join(
        f"{key} {row[key]['ms']:.1f} ms" for key in ("ranks_n", "ranks_1", "threads", "torch")
        if row[key]))
    return row


def format_table(rows, markdown=False):
    n = rows[0]["ranks"]
    header = ["config", "batch", "torch ms", f"{n} ranks ms", "ratio", "1 rank ms",
              f"{n} threads ms", "efficiency", "all-reduce share"]
    lines = []
    for row in rows:
        torch_ms = row["torch"]["ms"] if row["torch"] else None
        ranks_ms = row["ranks_n"]["ms"]
        lines.append([
            row["config"], str(row["batch_size"]),
            f"{torch_ms:.1f}" if torch_ms else "-", f"{ranks_ms:.1f}",
            f"{ranks_ms / torch_ms:.2f}" if torch_ms else "-", f"{row['ranks_1']['ms']:.1f}",
            f"{row['threads']['ms']:.1f}", f"{row['ranks_1']['ms'] / (n * ranks_ms):.0%}",
            f"{row['ranks_n']['sum_ms'] / ranks_ms:.1%}"])
    if markdown:
        return "\n".join(["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
                         + ["| " + " | ".join(line) + " |" for line in lines])
    widths = [max(len(cells[i]) for cells in [header] + lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(cells, widths))
                     for cells in [header] + lines)


def _csv(kind):
    return lambda text: [kind(item) for item in text.split(",") if item]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="CPU training step on MPI ranks vs PyTorch on the same cores",
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=_csv(str), default=list(DEFAULT_CONFIGS))
    parser.add_argument("--batch-sizes", type=_csv(int), default=list(DEFAULT_BATCH_SIZES))
    parser.add_argument("--ranks", type=int, default=2, help="ranks of the parallel run")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--ours-only", action="store_true", help="skip PyTorch")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table too")
    parser.add_argument("--json", metavar="PATH", help="write every figure to PATH")
    parser.add_argument("--worker", choices=("ranks", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-threads", type=int, default=1, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.worker == "ranks":
        return _rank_worker(args.configs[0], args.batch_sizes[0], args.steps, args.warmup,
                            args.worker_threads)
    if args.worker == "torch":
        return _torch_worker(args.configs[0], args.batch_sizes[0], args.steps, args.warmup)
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or \
        shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit("mpiexec is missing: pip install -e '.[dev,mpi]'")
    if not args.ours_only:
        try:
            import torch  # noqa: F401
        except ImportError:
            sys.exit("PyTorch is missing: pip install torch==2.13.0 (or give --ours-only)")

    def log(message):
        print(message, file=sys.stderr, flush=True)

    rows = [measure(config, batch_size, args, mpiexec, log)
            for config in args.configs for batch_size in args.batch_sizes]
    print(format_table(rows))
    if args.markdown:
        print()
        print(format_table(rows, markdown=True))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
