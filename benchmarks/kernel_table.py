"""Where a training step's device time goes, kernel by kernel, ours beside PyTorch's.

    python -m benchmarks.kernel_table --configs resnet --batch-sizes 100,1000 [--array-code]

CUPTI, through `torch.profiler`, records every kernel the process launches, CuPy's included, so
one profiler reads both sides. Each side runs eagerly (a CUDA graph replays the same kernels) for
`--steps` steps after a warm-up; the table gives each kernel's launches and microseconds per step,
the kernels that take most first, and the totals. Needs a GPU and PyTorch with CUDA.
"""
import argparse
import re
import sys

from benchmarks.gpu_vs_torch import make_torch_step
from xpnn.backend import Mode, get_device, running_on
from xpnn.tools.bench import StepBench, load_config


def kernel_times(step, synchronize, steps, torch, on_gpu=True):
    """{kernel name: (launches, device us)} over `steps` calls of `step` (after one warm-up).
    `on_gpu` False (a dry run on the CPU): the host operations PyTorch records, ours none."""
    from torch.profiler import ProfilerActivity, profile

    step()
    synchronize()
    kind = torch.autograd.DeviceType.CUDA if on_gpu else torch.autograd.DeviceType.CPU
    activity = ProfilerActivity.CUDA if on_gpu else ProfilerActivity.CPU
    with profile(activities=[activity]) as recorded:
        for _ in range(steps):
            step()
        synchronize()
    totals = {}
    for event in recorded.events():
        if event.device_type != kind:
            continue
        micros = event.time_range.elapsed_us()
        count, total = totals.get(event.name, (0, 0.0))
        totals[event.name] = (count + 1, total + micros)
    return totals


def short_name(name, width=70):
    """A kernel's name without template arguments and parameter lists, cut to `width`."""
    name = re.sub(r"<[^<>]*>", "", re.sub(r"<[^<>]*>", "", name))
    name = re.sub(r"\(.*", "", name).strip()
    return name if len(name) <= width else name[:width - 3] + "..."


def table(totals, steps, top):
    """Markdown rows: the `top` kernels by time (launches and us per step), then the total."""
    rows = sorted(totals.items(), key=lambda item: -item[1][1])
    lines = ["| kernel | launches / step | us / step |", "| --- | --- | --- |"]
    for name, (count, micros) in rows[:top]:
        lines.append(f"| `{short_name(name)}` | {count / steps:g} | {micros / steps:.1f} |")
    rest = rows[top:]
    if rest:
        lines.append(f"| ({len(rest)} more kernels) | {sum(c for _, (c, _) in rest) / steps:g} | "
                     f"{sum(m for _, (_, m) in rest) / steps:.1f} |")
    launches = sum(count for count, _ in totals.values()) / steps
    micros = sum(m for _, m in totals.values()) / steps
    lines.append(f"| **total** | **{launches:g}** | **{micros:.1f}** |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="resnet")
    parser.add_argument("--batch-sizes", default="100,1000")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--device", default="gpu", help="gpu, or cpu for a dry run")
    parser.add_argument("--array-code", action="store_true",
                        help="ours with the array code instead of the fused kernels")
    args = parser.parse_args(argv)
    device = get_device(args.device)
    for name in args.configs.split(","):
        config = load_config(f"configs/{name}.yaml")
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            mode = Mode(None if args.array_code else "fused")  # eager: every kernel launched
            with running_on(device, mode):
                ours = StepBench(config, device, batch_size, mode=mode)
                import torch  # after CuPy took the device, as in the other benchmarks
                mine = kernel_times(ours.step, device.synchronize, args.steps, torch,
                                    device.is_gpu)
            step, sync, torch = make_torch_step(config, device.name, batch_size)
            theirs = kernel_times(step, sync, args.steps, torch, device.is_gpu)
            for side, totals in (("ours", mine), ("PyTorch eager", theirs)):
                print(f"\n### {name}, batch {batch_size}: {side}\n")
                print(table(totals, args.steps, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
