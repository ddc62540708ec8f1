"""Time full training steps of a configured network, optionally layer by layer.

    from xpnn.tools.bench import benchmark
    result = benchmark(config, "cpu", batch_size=100)        # config: a whole parsed YAML file
    print(result.format())

One training step is the training loop's own (`training.step.TrainingStep`, built by
`training.setup.build_model`): the batch gathered on the device and made float, warped when the
config augments, forward, loss, running sums, backward, update; on the CPU ``model`` is
``nets.DataParallel(net, workers)`` as in the trainer and on a GPU the network itself;
``workers=0`` times the bare network with BLAS on every core. The batch is one fixed random
uint8 batch sent to the device once, so reading the dataset from disk is not timed. Each timed
step is bracketed by ``device.synchronize()``.

Peak memory is the process's peak RSS on the CPU (``ru_maxrss``: the whole process, imports
and anything run before included, so compare figures from fresh processes:
`benchmark_in_subprocess`) and CuPy's memory-pool total on a GPU (the pool keeps freed blocks,
so its total is the high-water mark of what the step allocated).

Command line: ``xpnn bench -c resnet --batch-size 100 [--profile] [--workers N] [--subprocess]
[--json]``.
"""
import dataclasses
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy

import xpnn
from xpnn import nets
from xpnn.backend import Mode, default_mode, get_device, new_rng, running_on
from xpnn.backend.communicator import Ranks
from xpnn.training.augment import Augmentation
from xpnn.training.captured_step import CapturedStep
from xpnn.training.config import load_config, validate_config
from xpnn.training.metrics import RunningStats
from xpnn.training.setup import build_model, build_network
from xpnn.training.step import TrainingStep

PACKAGE_PARENT = str(Path(xpnn.__file__).resolve().parent.parent)  # the folder holding xpnn/
# The learning rate does not change what a step costs, but the configs' rates (meant to follow a
# warm-up) drive the deeper ResNets to NaN within a few steps on a fixed random batch, and timings
# of a diverged network are not trustworthy. Benchmarks use this rate unless told otherwise.
BENCH_LR = 1e-3


# -- building what a step needs -----------------------------------------------------------------

def make_batch(model_config, batch_size, seed=0):
    """A fixed host batch: uint8 images of shape (batch_size, *input_shape), as a dataset holds
    them, and int64 labels in [0, num_classes). The same seed gives the same batch (PyTorch
    uses it too)."""
    rng = new_rng([seed, 1])  # a stream apart from the weights' `seed`
    shape = (batch_size, *model_config["input_shape"])
    images = rng.integers(0, 256, size=shape, dtype=numpy.uint8)
    classes = model_config.get("num_classes", nets.DEFAULT_NUM_CLASSES)
    labels = rng.integers(0, classes, size=batch_size, dtype=numpy.int64)
    return images, labels


def time_steps(step, count, synchronize=lambda: None, queued=None):
    """Run `step()` `count` times; return each run's wall time in ms, `synchronize()` before
    starting the clock and before stopping it.

    `queued`, a list, receives each run's time in ms until `step()` returned: on a GPU, the host
    time spent queueing its kernels (the device idle at the start)."""
    times = []
    for _ in range(count):
        synchronize()
        start = time.perf_counter()
        step()
        returned = time.perf_counter()
        synchronize()
        times.append((time.perf_counter() - start) * 1e3)
        if queued is not None:
            queued.append((returned - start) * 1e3)
    return times


class StepBench:
    """The training step that `xpnn train` runs (`training.step.TrainingStep`: gather, /255,
    augmentation warp, forward, loss, running sums, backward, rank sum, update), built as the
    trainer builds it (`training.setup.build_model`), on one fixed batch; `step()` runs it once.

    `lr`: the optimizer's rate (None: the config's; see BENCH_LR). `workers`: on the CPU, the
    step runs on ``nets.DataParallel(net, workers)`` as the trainer's does (None: the trainer's
    default); 0 runs the bare network with BLAS on every core. Ignored on a GPU. `ranks`: this
    process's ranks, each computing its slice of the batch. With augmentation in the config,
    each step warps the batch by one fixed set of maps. `mode`: the `backend.Mode` the steps run
    in (None: the device's default); in a graph mode each step is one CUDA graph
    (`training.captured_step`; the first step eager, the second captured).
    Attributes: `net`, `model`, `workers`, `optimizer`, `device`, `mode`, `training_step`,
    `graph` (the `CapturedStep`, or None), `loss` (the last step's loss, a 0-d device array).
    """

    def __init__(self, config, device="cpu", batch_size=100, seed=0, lr=BENCH_LR, workers=None,
                 ranks=None, mode=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if workers is not None and (not isinstance(workers, int) or workers < 0):
            raise ValueError(f"workers must be None or an integer >= 0, got {workers!r}")
        self.device = get_device(device)
        self.ranks = ranks if ranks is not None else Ranks()
        config = validate_config(config)  # defaults filled in, as the trainer's config has them
        config["train"]["seed"] = seed
        self.mode = (mode or default_mode(self.device, self.ranks.size)).check(
            self.device, self.ranks.size)
        with running_on(self.device, self.mode):
            self.net = build_network(config)
            self.model, self.optimizer, self.workers = build_model(
                self.net, config, self.device, -(-batch_size // self.ranks.size),
                workers=workers, ranks=self.ranks, lr=lr)
            self.stats = RunningStats(self.device.xp)
        images, labels = make_batch(config["model"], batch_size, seed)
        self.training_step = TrainingStep(self.model, self.optimizer,
                                          self.device.send(images), self.device.send(labels),
                                          self.stats, self.ranks)
        self.index = self.device.send(numpy.arange(batch_size)[self.ranks.shard(batch_size)])
        augment = Augmentation.from_config(config.get("data", {}).get("augment") or {})
        self.maps = None if augment is None else self.device.send(
            augment.step_maps(batch_size, *images.shape[2:], seed, 0, 0)[
                self.ranks.shard(batch_size)])
        self.batch_size = batch_size
        self.graph = CapturedStep(self.training_step) if self.mode.graph else None
        self.run_step = self.graph or self.training_step

    @property
    def loss(self):
        return self.training_step.loss

    def step(self):
        self.run_step(self.index, self.optimizer.lr, self.maps, self.batch_size)

    def timed_steps(self, count, queued=None):
        """`count` steps in the bench's mode; their times in ms, the device synchronised around
        each (`queued`: see `time_steps`)."""
        with running_on(self.device, self.mode):
            return time_steps(self.step, count, self.device.synchronize, queued)


# -- memory -------------------------------------------------------------------------------------

def peak_rss_mib():
    """This process's peak resident set size so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib():
    """This process's resident set size now, in MiB (None where /proc is missing)."""
    try:
        with open("/proc/self/statm") as file:
            pages = int(file.read().split()[1])
    except OSError:
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_usage():
    """(user + system CPU seconds, system CPU seconds, minor page faults) of this process so far,
    all threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_stime, usage.ru_minflt


def usage_per_step(before, after, wall_ms, steps):
    """{"cores_used", "system_ms_per_step", "page_faults_per_step"} between two `cpu_usage()`s.

    cores_used: CPU time / wall time (spinning BLAS threads count as used)."""
    cpu, system, faults = (b - a for a, b in zip(before, after))
    return {"cores_used": cpu * 1e3 / wall_ms if wall_ms > 0 else float("nan"),
            "system_ms_per_step": system * 1e3 / steps, "page_faults_per_step": faults / steps}


def _gpu_pool_mib(device):
    return device.xp.get_default_memory_pool().total_bytes() / 2**20


# -- per-layer profile --------------------------------------------------------------------------

@dataclasses.dataclass
class ProfileRow:
    """Mean ms per step spent in one part of the step. `depth` 1 rows are inside the depth-0
    row above them (their time is part of it, not added to the total)."""
    name: str
    forward_ms: float
    backward_ms: float
    depth: int = 0
    split: bool = True  # False: not a forward/backward pair; only the total is shown

    @property
    def total_ms(self):
        return self.forward_ms + self.backward_ms


def layer_label(layer):
    """A short name for a layer: ``Conv 6->16 k5``, ``Linear 784->120``, ``MaxPool k2 s2``..."""
    kind = type(layer).__name__
    try:
        if kind == "ConvLayer":
            stride = f" s{layer.stride}" if layer.stride != 1 else ""
            return f"Conv {layer.in_channels}->{layer.out_channels} k{layer.kernel_size}{stride}"
        if kind == "LinearLayer":
            return f"Linear {layer.in_features}->{layer.out_features}"
        if kind == "MaxPoolLayer":
            return f"MaxPool k{layer.kernel_size} s{layer.stride}"
        if kind == "LeakyReLULayer":
            return f"LeakyReLU {layer.slope:g}"
        if kind == "ResNetBlock":
            convs = [child for _, child in _leaves(layer) if type(child).__name__ == "ConvLayer"]
            return f"ResNetBlock {convs[0].in_channels}" if convs else kind
    except AttributeError:  # a layer rewritten since: fall back to its class name
        pass
    return kind.removesuffix("Layer") or kind


def _leaves(layer, prefix=""):
    """Yield (dotted name, layer) for every descendant of `layer` that has no children."""
    for name, child in layer.named_children():
        if any(True for _ in child.named_children()):
            yield from _leaves(child, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", child


class _Profiler:
    """Replaces `forward`/`backward` (or any methods) of chosen objects by timing wrappers set
    on the instances; `restore()` puts the originals back. Times add up over all calls."""

    _MISSING = object()

    def __init__(self, synchronize):
        self.synchronize = synchronize
        self.totals = {}  # (key, method) -> accumulated seconds
        self._patched = []  # (object, method name, previous instance attribute or _MISSING)

    def wrap(self, key, obj, method):
        original = getattr(obj, method)
        totals, synchronize = self.totals, self.synchronize
        totals[(key, method)] = 0.0

        def timed(*args, **kwargs):
            synchronize()
            start = time.perf_counter()
            result = original(*args, **kwargs)
            synchronize()
            totals[(key, method)] += time.perf_counter() - start
            return result

        self._patched.append((obj, method, vars(obj).get(method, self._MISSING)))
        setattr(obj, method, timed)

    def restore(self):
        for obj, method, previous in reversed(self._patched):
            if previous is self._MISSING:
                delattr(obj, method)
            else:
                setattr(obj, method, previous)
        self._patched.clear()

    def ms(self, key, method, steps):
        return self.totals.get((key, method), 0.0) * 1e3 / steps


def profile_steps(runner, steps):
    """Run `steps` profiled steps; return (rows, mean ms per profiled step).

    Rows: each top-level layer of ``net.layers`` (and, indented, the leaf layers inside a
    composite one such as a ResNetBlock, plus that block's own glue), the loss, the optimizer's
    ``zero_grad`` and ``step``, and "(between timers)": the rest of the step (Python glue,
    timer overhead, freeing arrays). Depth-0 rows sum to the mean step time.

    With DataParallel workers the layer rows are worker 0's (the calling thread's, on its share
    of the batch, while the other workers run beside it), and "(between timers)" also holds the
    wait for the other workers and the adding up of their gradients.
    """
    net, optimizer, device = runner.net, runner.optimizer, runner.device
    profiler = _Profiler(device.synchronize if device.is_gpu else lambda: None)
    top = [(f"{index} {layer_label(layer)}", layer) for index, layer in enumerate(net.layers)]
    children = {}
    for key, layer in top:
        children[key] = [(f"{name} {layer_label(leaf)}", leaf) for name, leaf in _leaves(layer)]
        for method in ("forward", "backward"):
            profiler.wrap(key, layer, method)
            for child_key, leaf in children[key]:
                profiler.wrap((key, child_key), leaf, method)
    profiler.wrap("loss", net.loss_layer, "forward")
    profiler.wrap("loss", net.loss_layer, "backward")
    profiler.wrap("optimizer", optimizer, "zero_grad")
    profiler.wrap("optimizer", optimizer, "update")
    try:
        step_ms = statistics.fmean(runner.timed_steps(steps))
    finally:
        profiler.restore()

    def row(name, key, forward, backward, depth=0):
        return ProfileRow(name, profiler.ms(key, forward, steps), profiler.ms(key, backward, steps),
                          depth)

    rows = []
    for key, _ in top:
        parent = row(key, key, "forward", "backward")
        rows.append(parent)
        inner = [row(child_key, (key, child_key), "forward", "backward", depth=1)
                 for child_key, _ in children[key]]
        if inner:
            rows.extend(inner)
            rows.append(ProfileRow("(block glue)",
                                   parent.forward_ms - sum(r.forward_ms for r in inner),
                                   parent.backward_ms - sum(r.backward_ms for r in inner), 1))
    rows.append(row("loss (softmax cross-entropy)", "loss", "forward", "backward"))
    rows.append(ProfileRow("optimizer.zero_grad", profiler.ms("optimizer", "zero_grad", steps), 0.0,
                           split=False))
    rows.append(ProfileRow("optimizer.update", profiler.ms("optimizer", "update", steps), 0.0,
                           split=False))
    accounted = sum(r.total_ms for r in rows if r.depth == 0)
    rows.append(ProfileRow("(between timers)", step_ms - accounted, 0.0, split=False))
    return rows, step_ms


# -- results ------------------------------------------------------------------------------------

@dataclasses.dataclass
class BenchResult:
    """Timings of `steps` training steps after `warmup` untimed ones.

    `step_ms`: each timed step in ms. `peak_memory_mib` is described by `memory_kind`.
    `workers`: DataParallel worker threads (0: the bare network). Over the timed steps:
    `cores_used` (process CPU time / wall time), `system_ms_per_step` (kernel time: page faults
    of freshly allocated arrays, mostly), `page_faults_per_step` (minor faults).
    `profile`: `ProfileRow`s (mean ms per step over `steps` further, profiled, steps) or None;
    `profile_step_ms`: the mean step time while profiled (timers included).
    `queue_ms` (GPU only): each timed step's host time until its kernels were all queued; near
    `step_ms`, the step is bound by launching kernels rather than by running them.
    `fused_kernels`, `cuda_graph`, `precision`: the mode the step ran in (`backend.Mode`):
    the fused CUDA kernels, each step one CUDA graph, the GPU products' precision.
    """
    model: str
    device: str
    batch_size: int
    steps: int
    warmup: int
    seed: int
    num_parameters: int
    step_ms: list
    peak_memory_mib: float
    memory_kind: str
    start_rss_mib: float = None
    final_loss: float = None
    label: str = ""
    lr: float = None
    optimizer: str = ""
    workers: int = 0
    cores_used: float = None
    system_ms_per_step: float = None
    page_faults_per_step: float = None
    profile: list = None
    profile_step_ms: float = None
    queue_ms: list = None
    fused_kernels: bool = False
    cuda_graph: bool = False
    precision: str = "fp32"

    @property
    def median_ms(self):
        return statistics.median(self.step_ms)

    @property
    def min_ms(self):
        return min(self.step_ms)

    @property
    def max_ms(self):
        return max(self.step_ms)

    @property
    def images_per_s(self):
        return self.batch_size / (self.median_ms / 1e3)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        data = dict(data)
        if data.get("profile") is not None:
            data["profile"] = [ProfileRow(**row) for row in data["profile"]]
        return cls(**data)

    def format(self):
        """A readable multi-line report (and the profile table, when there is one)."""
        title = f"{self.model}" + (f" ({self.label})" if self.label else "")
        lines = [
            f"{title}: {self.num_parameters:,} parameters, device {self.device}, "
            f"batch {self.batch_size}, {self.steps} timed steps after {self.warmup} warm-up"
            + (f", {self.optimizer} lr {self.lr:g}" if self.optimizer else ""),
            f"  step time: median {self.median_ms:.2f} ms (min {self.min_ms:.2f}, "
            f"max {self.max_ms:.2f}) -> {self.images_per_s:,.0f} images/s",
            "  computed by: " + (f"DataParallel, {self.workers} worker threads, BLAS 1 thread "
                                  f"each" if self.workers else "the network itself")
            + (", fused CUDA kernels" if self.fused_kernels else "")
            + (", one CUDA graph per step" if self.cuda_graph else "")
            + (f", {self.precision}" if self.precision != "fp32" else ""),
            f"  peak memory: {self.peak_memory_mib:.1f} MiB ({self.memory_kind})",
        ]
        if self.start_rss_mib is not None:
            lines.append(f"  RSS before building the network: {self.start_rss_mib:.1f} MiB")
        if self.cores_used is not None:
            host = "CPU" if self.device == "cpu" else "host CPU (waiting on the GPU is busy)"
            lines.append(f"  {host}: {self.cores_used:.2f} cores busy, "
                         f"{self.system_ms_per_step:.1f} ms per step in the kernel, "
                         f"{self.page_faults_per_step:,.0f} page faults per step")
        if self.queue_ms:
            queue = statistics.median(self.queue_ms)
            lines.append(f"  host time to queue a step's kernels: median {queue:.2f} ms "
                         f"({100 * queue / self.median_ms:.0f}% of the step; near 100%: "
                         f"launch-bound)")
        if self.final_loss is not None:
            note = "" if math.isfinite(self.final_loss) else "  <- NOT FINITE: timings suspect"
            lines.append(f"  loss after the last step: {self.final_loss:.4f}{note}")
        if self.profile:
            lines.append("")
            lines.append(format_profile(self.profile, self.profile_step_ms, self.steps,
                                        self.workers))
        return "\n".join(lines)


def format_profile(rows, step_ms, steps, workers=0):
    """The per-layer table: forward, backward, total ms and % of the profiled step."""
    width = max(32, *(len(r.name) + 4 * r.depth for r in rows))
    header = f"{'part of the step':<{width}} {'forward':>9} {'backward':>9} {'total':>9} {'%':>6}"
    lines = [f"Profile: mean ms per step over {steps} profiled steps "
             f"({step_ms:.2f} ms/step with timers; indented rows are inside the row above)"]
    if workers > 1:
        lines.append(f"Layer rows: worker 0 of {workers}, on its 1/{workers} of the batch while "
                     f"the others run beside it; '(between timers)' includes waiting for them and "
                     f"adding their gradients. --workers 0 profiles the bare network.")
    lines += [header, "-" * len(header)]
    for r in rows:
        name = "    " * r.depth + r.name
        split = f"{r.forward_ms:9.3f} {r.backward_ms:9.3f}" if r.split else f"{'':9} {'':9}"
        lines.append(f"{name:<{width}} {split} {r.total_ms:9.3f} {100 * r.total_ms / step_ms:6.1f}")
    lines.append("-" * len(header))
    lines.append(f"{'step':<{width}} {'':>9} {'':>9} {step_ms:9.3f} {100.0:6.1f}")
    return "\n".join(lines)


# -- the benchmark ------------------------------------------------------------------------------

def benchmark(config, device, batch_size, steps=30, warmup=5, profile=False, seed=0,
              lr=BENCH_LR, workers=None, mode=None):
    """Time `steps` full training steps of the network `config['model']` describes.

    Args:
        config: a whole config (``model`` section required; ``train`` picks the optimizer and
            loss, ``data.augment`` the warp).
        device: a `Device` or a flag value (``cpu``, ``gpu``, ``cuda:N``).
        batch_size: images per step.
        steps, warmup: timed steps, and untimed ones before them.
        profile: also run `steps` more steps with per-layer timers (GPU: synchronised around
            every layer, which slows the step) and add the table.
        seed: weights and batch.
        lr: the optimizer's learning rate (None: the config's, which may diverge; see BENCH_LR).
        workers: CPU worker threads as in the trainer (None: one per core; 0: the bare network
            with multi-threaded BLAS; see `StepBench`).
        mode: the `backend.Mode` to run in, or its fields as a dict (None: the device's
            default, `backend.default_mode`); in a graph mode two more untimed steps warm up and
            capture the step.
    Returns:
        `BenchResult`.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={steps!r}, warmup={warmup!r}")
    start_rss = current_rss_mib()
    runner = StepBench(config, device, batch_size, seed, lr, workers,
                       mode=Mode(**mode) if isinstance(mode, dict) else mode)
    if runner.mode.graph and profile:
        raise ValueError("profile times each layer, which a step replayed as one CUDA graph "
                         "cannot show; profile in an eager mode (--eager)")
    runner.timed_steps(warmup + (2 if runner.mode.graph else 0))
    before = cpu_usage()
    queue_ms = [] if runner.device.is_gpu else None
    step_ms = runner.timed_steps(steps, queue_ms)
    usage = usage_per_step(before, cpu_usage(), sum(step_ms), steps)
    final_loss = float(runner.loss)
    rows = profile_step_ms = None
    if profile:
        rows, profile_step_ms = profile_steps(runner, steps)
    if runner.device.is_gpu:
        memory, kind = _gpu_pool_mib(runner.device), "CuPy memory pool total, high-water mark"
        start_rss = None
    else:
        memory, kind = peak_rss_mib(), "peak RSS of the whole process, imports included"
    return BenchResult(
        model=config["model"].get("name", "network"), device=runner.device.name,
        batch_size=batch_size, steps=steps, warmup=warmup, seed=seed,
        num_parameters=int(runner.net.num_parameters()), step_ms=step_ms,
        peak_memory_mib=memory, memory_kind=kind, start_rss_mib=start_rss,
        final_loss=final_loss, profile=rows, profile_step_ms=profile_step_ms,
        lr=runner.optimizer.lr, optimizer=type(runner.optimizer).__name__,
        workers=runner.workers, queue_ms=queue_ms,
        fused_kernels=runner.device.is_gpu and runner.mode.implementation == "fused",
        cuda_graph=runner.mode.graph, precision=runner.mode.precision, **usage,
    )


def benchmark_in_subprocess(config, device="cpu", batch_size=100, steps=30, warmup=5,
                            profile=False, seed=0, lr=BENCH_LR, workers=None, mode=None,
                            label="", env=None, timeout=None):
    """`benchmark` in a fresh Python process, so its peak RSS is this run's alone.

    `config` is a dict or a path; `env` adds to (or, with None values, removes from) the child's
    environment. Raises `RuntimeError` with the child's stderr if it fails.
    """
    if not isinstance(config, dict):
        label = label or str(config)
        config = load_config(config)
    request = {"config": config, "device": str(getattr(device, "name", device)),
               "batch_size": batch_size, "steps": steps, "warmup": warmup,
               "profile": profile, "seed": seed, "lr": lr, "workers": workers,
               "mode": None if mode is None else dataclasses.asdict(mode)}
    child_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = str(value)
    # the child imports this same xpnn, installed or in a checkout
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT,
                                                            child_env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, "-c", "from xpnn.tools.bench import serve_json_request; "
                               "serve_json_request()"],
        input=json.dumps(request), capture_output=True, text=True, env=child_env, timeout=timeout)
    if completed.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed (exit {completed.returncode}):\n"
                           f"{completed.stderr.strip()}")
    result = BenchResult.from_dict(json.loads(completed.stdout.strip().splitlines()[-1]))
    result.label = label
    return result


def serve_json_request():
    """Read one benchmark request (JSON) on stdin, write the `BenchResult` as JSON on stdout:
    what the child process of `benchmark_in_subprocess` runs."""
    request = json.load(sys.stdin)
    result = benchmark(**request)
    print(json.dumps(result.to_dict()))
