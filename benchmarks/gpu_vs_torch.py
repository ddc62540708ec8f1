"""Our training step against PyTorch's, eager and as a CUDA graph, on one device (made for the
GPU; runs on the CPU too, where the graph variants are left out).

    python -m benchmarks.gpu_vs_torch --device gpu --configs lenet,resnet --batch-sizes 100,1000 \
        --variants array,fused,graph,graph-fused

Both sides start from the same weights and take the same fixed batch, already on the device.
Each timed step is bracketed by a device synchronisation (CuPy's and PyTorch's); the figures are
medians over `--steps` steps after `--warmup` (the first calls compile CuPy kernels, and a
graph variant's next two warm up and capture), then medians over `--rounds` rounds that each
time every side once, so a change in the host's load touches every side alike.

Ours (`--variants`, `VARIANTS`, each a `backend.Mode`): the array code (``array``), the fused
CUDA kernels (``fused``), and each step replayed as one CUDA graph whose products go through
cuBLAS called by nvmath-python (``graph``), also with the fused kernels (``graph-fused``, the
GPU default of `xpnn train`). PyTorch: eager with
cuDNN, its whole step captured with `torch.cuda.CUDAGraph` (as in PyTorch's "whole network
capture" recipe), and the same after `torch.compile` of the network (``compiled``). "queue" is our host time until a step's kernels were all queued (near the
step time: launch-bound). Prints a table, ratios ours / PyTorch eager and ours / PyTorch graph;
`--json` also writes the figures.
"""
import argparse
import json
import statistics
import sys
import time

from xpnn.backend import DeviceUnavailableError, Mode, get_device
from benchmarks.torch_nets import build_torch_net, copy_weights, import_torch, make_torch_optimizer
from xpnn.tools.bench import BENCH_LR, benchmark, load_config, make_batch

# ours: the mode of each variant
VARIANTS = {
    "array": Mode(),
    "fused": Mode("fused"),
    "graph": Mode(graph=True),
    "graph-fused": Mode("fused", graph=True),
}
TORCH_SIDES = ("eager", "graph", "compiled")


def make_torch_step(config, device_name, batch_size, seed=0, side="eager"):
    """(step, synchronize, torch) for PyTorch training steps of `config`'s network on 'cpu' or
    'cuda': `side` "eager", "graph" (the whole step replayed as one `torch.cuda.CUDAGraph`) or
    "compiled" (the network through `torch.compile`, then the whole step captured the same way:
    PyTorch's fastest on the H200). Same weights, batch and optimizer as ours."""
    from xpnn import nets

    torch = import_torch()
    device = torch.device("cuda" if device_name != "cpu" else "cpu")
    net = build_torch_net(config["model"], torch)
    copy_weights(nets.build(config["model"], seed=seed), net)
    net.to(device)
    optimizer = make_torch_optimizer(config.get("train"), net.parameters(), torch, BENCH_LR)
    model = torch.compile(net) if side == "compiled" else net
    loss_fn = torch.nn.CrossEntropyLoss()
    images, labels = make_batch(config["model"], batch_size, seed)
    images = torch.from_numpy(images).to(device).float().div_(255)  # as our step makes them
    labels = torch.from_numpy(labels).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def eager_step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimizer.step()

    if side == "eager":
        return eager_step, sync, torch
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm-up (and compilation) on a side stream, as the recipe asks
            eager_step()
    torch.cuda.current_stream().wait_stream(stream)
    captured = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(captured):
        loss_fn(model(images), labels).backward()
        optimizer.step()
    return captured.replay, sync, torch


def time_torch_step(step, sync, steps, warmup):
    """Median ms of `steps` calls of a PyTorch `step` after `warmup`, synchronised around each."""
    times = []
    for index in range(warmup + steps):
        sync()
        start = time.perf_counter()
        step()
        sync()
        if index >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def torch_step_ms(config, device_name, batch_size, steps, warmup, seed=0, side="eager"):
    """Median ms of PyTorch training steps (`make_torch_step`)."""
    step, sync, _ = make_torch_step(config, device_name, batch_size, seed, side)
    return time_torch_step(step, sync, steps, warmup)


_noted = set()


def _note(line):
    """Print why a side was left out, once."""
    if line not in _noted:
        _noted.add(line)
        print(f"left out: {' '.join(line.split())[:300]}", flush=True)


def _median(values):
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else float("nan")


def compare(config, device, batch_size, variants, torch_sides, rounds, steps, warmup):
    """One table row: medians over `rounds` rounds, each timing every variant of ours (built
    anew) and then PyTorch's sides (built once)."""
    ours = {variant: [] for variant in variants}
    queued = {variant: [] for variant in variants}
    theirs = {side: [] for side in torch_sides}
    torch_steps = {}  # built once: a compiled network takes tens of seconds to compile
    for side in torch_sides:
        try:
            torch_steps[side] = make_torch_step(config, device.name, batch_size, side=side)[:2]
        except Exception as error:  # PyTorch's capture or compiler failing on this machine
            _note(f"PyTorch {side}: {error}")
    for _ in range(rounds):
        for variant in variants:
            try:
                result = benchmark(config, device, batch_size, steps=steps, warmup=warmup,
                                   mode=VARIANTS[variant])
            except DeviceUnavailableError as error:  # e.g. nvmath-python not installed: NaN
                _note(f"ours {variant}: {error}")
                continue
            ours[variant].append(result.median_ms)
            queued[variant].append(_median(result.queue_ms or [None]))
        for side, (step, sync) in torch_steps.items():
            theirs[side].append(time_torch_step(step, sync, steps, warmup))
    row = {"batch": batch_size, "device": device.name, "rounds": rounds}
    for side in torch_sides:
        row[f"torch_{side}_ms"] = _median(theirs[side])
    for variant in variants:
        row[f"ours_{variant}_ms"] = _median(ours[variant])
        row[f"queue_{variant}_ms"] = _median(queued[variant])
        for side in torch_sides:
            row[f"ratio_{variant}_vs_torch_{side}"] = (row[f"ours_{variant}_ms"]
                                                     / row[f"torch_{side}_ms"])
    return row


def format_table(rows, variants, torch_sides):
    """The short markdown table: one line per (config, batch), ratios last."""
    header = ("| config | batch | device | " + " | ".join(f"PyTorch {side} ms" for side in
                                                          torch_sides)
              + " | " + " | ".join(f"ours {variant} ms (queue)" for variant in variants)
              + " | " + " | ".join(f"{variant} / torch {side}" for variant in variants
                                   for side in torch_sides) + " |")
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for row in rows:
        lines.append(
            f"| {row['config']} | {row['batch']} | {row['device']} | "
            + " | ".join(f"{row[f'torch_{side}_ms']:.2f}" for side in torch_sides) + " | "
            + " | ".join(f"{row[f'ours_{v}_ms']:.2f} ({row[f'queue_{v}_ms']:.2f})"
                         for v in variants) + " | "
            + " | ".join(f"{row[f'ratio_{v}_vs_torch_{side}']:.2f}" for v in variants
                         for side in torch_sides) + " |")
    return "\n".join(lines)


def _names(text, known, what, parser):
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        parser.error(f"{what} takes {', '.join(known)}, got {text!r}")
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="gpu", help="ours: cpu, gpu, cuda:N")
    parser.add_argument("--configs", default="lenet,resnet")
    parser.add_argument("--batch-sizes", default="100,1000")
    parser.add_argument("--variants", default="array,graph",
                        help=f"ours, comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--torch", default="eager,graph",
                        help="PyTorch's sides: eager (cuDNN), graph (torch.cuda.CUDAGraph), "
                             "compiled (torch.compile, then the step as one CUDA graph)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    variants = _names(args.variants, VARIANTS, "--variants", parser)
    torch_sides = _names(args.torch, TORCH_SIDES, "--torch", parser)

    device = get_device(args.device)
    if not device.is_gpu:  # a CUDA graph needs a GPU on either side
        skipped = [v for v in variants if VARIANTS[v].graph] + [
            f"torch {side}" for side in torch_sides if side != "eager"]
        if skipped:
            print(f"on {device.name}: leaving out {', '.join(skipped)} (CUDA graphs need a GPU)")
        variants = [v for v in variants if not VARIANTS[v].graph]
        torch_sides = [side for side in torch_sides if side == "eager"]
    rows = []
    with device.activated():
        for name in args.configs.split(","):
            config = load_config(f"configs/{name}.yaml")
            for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
                row = {"config": name, **compare(config, device, batch_size, variants,
                                                  torch_sides, args.rounds, args.steps,
                                                  args.warmup)}
                rows.append(row)
                print(f"{name:<8} batch {batch_size:>5}: " + "; ".join(
                    [f"PyTorch {side} {row[f'torch_{side}_ms']:.2f} ms" for side in torch_sides]
                    + [f"ours {v} {row[f'ours_{v}_ms']:.2f} ms" for v in variants]), flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)
    print("\n" + format_table(rows, variants, torch_sides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
