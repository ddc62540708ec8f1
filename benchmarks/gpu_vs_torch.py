"""Our training step against PyTorch's on one device (made for the GPU; runs on the CPU too).

    python -m benchmarks.gpu_vs_torch --device gpu --configs lenet,resnet --batch-sizes 100,1000

Both sides start from the same weights and take the same fixed batch, already on the device.
Each timed step is bracketed by a device synchronisation (CuPy's and PyTorch's); the figures are
medians over `--steps` steps after `--warmup` (the first calls compile CuPy kernels). PyTorch on
the GPU uses cuDNN, which CuPy 14 no longer has: the ratio says what our im2col + cuBLAS path
costs against it. Prints a table; `--json` also writes the figures.
"""
import argparse
import json
import statistics
import sys
import time

from backend import get_device
from benchmarks.torch_nets import build_torch_net, copy_weights, import_torch, make_torch_optimizer
from training.bench import BENCH_LR, benchmark, load_config, make_batch


def torch_step_ms(config, device_name, batch_size, steps, warmup, seed=0):
    """Median ms of PyTorch training steps of `config`'s network on 'cpu' or 'cuda'."""
    import nets

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="gpu", help="ours: cpu, gpu, cuda:N")
    parser.add_argument("--configs", default="lenet,resnet")
    parser.add_argument("--batch-sizes", default="100,1000")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)

    device = get_device(args.device)
    rows = []
    for name in args.configs.split(","):
        config = load_config(f"configs/{name}.yaml")
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            ours = benchmark(config, device, batch_size, steps=args.steps, warmup=args.warmup)
            theirs = torch_step_ms(config, device.name, batch_size, args.steps, args.warmup)
            rows.append({"config": name, "batch": batch_size, "device": device.name,
                         "ours_ms": ours.median_ms, "torch_ms": theirs,
                         "ratio": ours.median_ms / theirs, "ours_memory_mib": ours.peak_memory_mib})
            print(f"{name:<12} batch {batch_size:>5}: ours {ours.median_ms:8.2f} ms  "
                  f"PyTorch {theirs:8.2f} ms  ratio {ours.median_ms / theirs:5.2f}  "
                  f"(ours {ours.peak_memory_mib:.0f} MiB)", flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)
    print("\n| config | batch | device | ours ms/step | PyTorch ms/step | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['config']} | {row['batch']} | {row['device']} | {row['ours_ms']:.2f} | "
              f"{row['torch_ms']:.2f} | {row['ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
