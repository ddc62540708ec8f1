"""Our training step against PyTorch's on one device (made for the GPU; runs on the CPU too).

    python -m benchmarks.gpu_vs_torch --device gpu --configs lenet,resnet --batch-sizes 100,1000

Both sides start from the same weights and take the same fixed batch, already on the device.
Each timed step is bracketed by a device synchronisation (CuPy's and PyTorch's); the figures are
medians over `--steps` steps after `--warmup` (the first calls compile CuPy kernels), and then
medians over `--rounds` rounds that each time every side once. Ours runs as its array code and
with its fused CUDA kernels (`--variants`); "host queue" is the host time until a step's kernels
were all queued (near the step time: launch-bound). PyTorch on
the GPU uses cuDNN, which CuPy 14 no longer has: the ratio says what our im2col + cuBLAS path
costs against it. Prints a table; `--json` also writes the figures.
"""
import argparse
import json
import statistics
import sys
import time

from xpnn.backend import get_device
from benchmarks.torch_nets import build_torch_net, copy_weights, import_torch, make_torch_optimizer
from xpnn.tools.bench import BENCH_LR, benchmark, load_config, make_batch


def torch_step_ms(config, device_name, batch_size, steps, warmup, seed=0):
    """Median ms of PyTorch training steps of `config`'s network on 'cpu' or 'cuda'."""
    from xpnn import nets

    torch = import_torch()
    device = torch.device("cuda" if device_name != "cpu" else "cpu")
    net = build_torch_net(config["model"], torch)
    copy_weights(nets.build(config["model"], seed=seed), net)
    net.to(device)
    optimizer = make_torch_optimizer(config.get("train"), net.parameters(), torch, BENCH_LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    images, labels = make_batch(config["model"], batch_size, seed)
    images, labels = torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step():
        optimizer.zero_grad()
        loss_fn(net(images), labels).backward()
        optimizer.step()

    times = []
    for index in range(warmup + steps):
        sync()
        start = time.perf_counter()
        step()
        sync()
        if index >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


VARIANTS = {"array": False, "fused": True}  # ours: the array code, or the fused CUDA kernels


def _median(values):
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else float("nan")


def compare(config, device, batch_size, variants, rounds, steps, warmup):
    """One table row: medians over `rounds` rounds, each timing every variant of ours and then
    PyTorch, so that a change in the host's load touches every side alike."""
    ours = {variant: [] for variant in variants}
    queued = {variant: [] for variant in variants}
    theirs = []
    for _ in range(rounds):
        for variant in variants:
            result = benchmark(config, device, batch_size, steps=steps, warmup=warmup,
                               fused=VARIANTS[variant])
            ours[variant].append(result.median_ms)
            queued[variant].append(_median(result.queue_ms or [None]))
        theirs.append(torch_step_ms(config, device.name, batch_size, steps, warmup))
    row = {"batch": batch_size, "device": device.name, "torch_ms": _median(theirs),
           "rounds": rounds}
    for variant in variants:
        row[f"ours_{variant}_ms"] = _median(ours[variant])
        row[f"queue_{variant}_ms"] = _median(queued[variant])
        row[f"ratio_{variant}"] = row[f"ours_{variant}_ms"] / row["torch_ms"]
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="gpu", help="ours: cpu, gpu, cuda:N")
    parser.add_argument("--configs", default="lenet,resnet")
    parser.add_argument("--batch-sizes", default="100,1000")
    parser.add_argument("--variants", default="array,fused",
                        help="ours: 'array' (the array code), 'fused' (fused CUDA kernels), or both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    variants = [variant.strip() for variant in args.variants.split(",") if variant.strip()]
    unknown = [variant for variant in variants if variant not in VARIANTS]
    if unknown or not variants:
        parser.error(f"--variants takes {', '.join(VARIANTS)}, got {args.variants!r}")

    device = get_device(args.device)
    rows = []
    for name in args.configs.split(","):
        config = load_config(f"configs/{name}.yaml")
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            row = {"config": name, **compare(config, device, batch_size, variants, args.rounds,
                                              args.steps, args.warmup)}
            rows.append(row)
            print(f"{name:<12} batch {batch_size:>5}: PyTorch {row['torch_ms']:7.2f} ms; ours "
                  + "; ".join(f"{variant} {row[f'ours_{variant}_ms']:7.2f} ms (queue "
                              f"{row[f'queue_{variant}_ms']:.2f}, ratio "
                              f"{row[f'ratio_{variant}']:.2f})" for variant in variants),
                  flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)
    header = "| config | batch | device | PyTorch ms/step | " + " | ".join(
        f"ours {variant} ms/step | host queue ms | ratio {variant}" for variant in variants) + " |"
    print("\n" + header)
    print("|" + " --- |" * (header.count("|") - 1))
    for row in rows:
        print(f"| {row['config']} | {row['batch']} | {row['device']} | {row['torch_ms']:.2f} | "
              + " | ".join(f"{row[f'ours_{variant}_ms']:.2f} | {row[f'queue_{variant}_ms']:.2f} | "
                           f"{row[f'ratio_{variant}']:.2f}" for variant in variants) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
