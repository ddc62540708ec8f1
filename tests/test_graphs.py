"""CUDA-graph steps (`backend.graphs`, `training.captured_step`) checked without a GPU.

`HostGraphs` is a stand-in for the CuPy runtime that runs on NumPy and behaves as a capture
does where it matters: a capture runs the step's Python but leaves the device state as it was
(a real capture queues no work), a replay redoes the step's device work with the static buffers
it was captured with, and nothing may wait for the device or run outside the private pool
while capturing. A step that keeps state on the host, reads a value the graph would not update,
or allocates its inputs afresh every step then gives other results than eager steps, or fails.
"""
import contextlib

import numpy
import pytest

from test_training import LENET, SMALL, assert_same_run, lenet
from xpnn.backend import CPU
from xpnn.backend.graphs import GraphCaptureError, GraphStep, forbid_host_sync
from xpnn.training import load_config, start_run
from xpnn.training.captured_step import CapturedStep
from xpnn.training.metrics import RunningStats


class HostGraphs:
    """The `GraphStep` runtime on NumPy (see the module's docstring).

    Args:
        device_state: returns the arrays a step writes (restored after a capture).
        static: returns the static input buffers; every replay must see the same objects.
    """

    def __init__(self, device_state, static=lambda: []):
        self.device_state, self.static = device_state, static
        self.pool = None
        self.pools, self.events = [], []

    def new_stream(self):
        return "graph stream"

    def new_pool(self):
        self.pools.append(object())
        return self.pools[-1]

    @contextlib.contextmanager
    def allocating_from(self, pool):
        previous, self.pool = self.pool, pool
        try:
            yield
        finally:
            self.pool = previous

    @contextlib.contextmanager
    def ordered_on(self, stream):
        yield

    def capture(self, stream, run):
        assert self.pool in self.pools, "a capture must allocate from the graph's private pool"
        with pytest.raises(GraphCaptureError):  # a capture is under way
            forbid_host_sync("a capture")
        saved = [array.copy() for array in self.device_state()]
        try:
            run()
        finally:
            for array, before in zip(self.device_state(), saved):
                array[...] = before
        self.events.append("capture")
        return run, list(self.static())

    def launch(self, graph, stream):
        run, static = graph
        forbid_host_sync("a replay")  # raises while capturing
        assert all(a is b for a, b in zip(static, self.static())), \
            "a replay reads the buffers it was captured with: refill them, do not replace them"
        self.events.append("launch")
        run()


def trainer_state(trainer):
    optimizer = trainer.optimizer
    return [optimizer.data, optimizer.grad, optimizer.velocity, optimizer.lr_on_device,
            trainer.stats.loss_sum, trainer.stats.correct]


def graphed(trainer, static):
    """`trainer` with its step replayed as a graph on `HostGraphs`; `static(captured)` lists
    the captured step's static buffers."""
    captured = CapturedStep(trainer.training_step, HostGraphs(lambda: trainer_state(trainer),
                                                              lambda: static(captured)))
    trainer.run_step = captured
    return captured


@pytest.mark.parametrize("implementation", ["cpu", "fused-emulated"])
def test_replayed_steps_train_exactly_as_eager_steps(tmp_path, implementation):
    """Two epochs of 300 images in batches of 40 (seven full batches and a short one): the
    weights, optimizer state, step counts and metrics of graph replays equal eager steps', bit
    for bit; each batch size warms up once and is captured once (the running sums are reset in
    place each epoch, so the graphs keep writing them)."""
    import cuda_emulation
    if implementation == "fused-emulated":
        reason = cuda_emulation.unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
        block = cuda_emulation.emulating()
    else:
        block = contextlib.nullcontext()
    config = lenet(epochs=2, batch_size=40)
    with block:
        start_run(config, CPU, tmp_path / "eager", **SMALL).fit()
        trainer = start_run(config, CPU, tmp_path / "graph", **SMALL)
        captured = graphed(trainer, lambda captured: [captured.index])
        trainer.fit()
    assert_same_run(tmp_path / "eager", tmp_path / "graph")
    graph = captured.graph
    assert (graph.eager_runs, graph.captures, graph.replays) == (2, 2, 14)
    assert trainer.optimizer.steps == 16


def test_replayed_augmented_steps_train_exactly_as_eager_ones(tmp_path):
    """The warp runs inside the graph on maps refilled before each replay: two epochs with every
    transform on and label smoothing end bit for bit as eager steps do."""
    config = load_config(LENET, {"train.epochs": 2, "train.batch_size": 40,
                                 "train.label_smoothing": 0.1,
                                 "data.augment": {"translate": 2, "rotate": 10, "scale": 0.1,
                                                  "shear": 10}})
    start_run(config, CPU, tmp_path / "eager", **SMALL).fit()
    trainer = start_run(config, CPU, tmp_path / "graph", **SMALL)
    captured = graphed(trainer, lambda captured: [captured.index, captured.maps])
    trainer.fit()
    assert_same_run(tmp_path / "eager", tmp_path / "graph")
    assert captured.graph.replays == 14 and set(captured.all_maps) == {40, 20}


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_replayed_adam_steps_train_exactly_as_eager_ones(tmp_path, optimizer):
    """Adam's bias corrections change every step: replays compute them from the device step
    counter the update advances, and end bit for bit as eager steps do (CPU pow on both)."""
    from xpnn.training import load_checkpoint, validate_config
    from xpnn.training.config import read_config
    raw = read_config(LENET)
    raw["train"] = {"epochs": 2, "batch_size": 40, "optimizer": optimizer, "lr": 0.002,
                    "weight_decay": 0.05, "schedule": {"name": "cosine", "warmup_epochs": 0.2}}
    config = validate_config(raw)
    start_run(config, CPU, tmp_path / "eager", **SMALL).fit()
    trainer = start_run(config, CPU, tmp_path / "graph", **SMALL)

    def state():
        opt = trainer.optimizer
        return [opt.data, opt.grad, opt.exp_avg, opt.exp_avg_sq, opt.lr_on_device,
                opt.steps_on_device, trainer.stats.loss_sum, trainer.stats.correct]

    captured = CapturedStep(trainer.training_step, HostGraphs(state, lambda: [captured.index]))
    trainer.run_step = captured
    trainer.fit()
    assert captured.graph.replays == 14
    assert float(trainer.optimizer.steps_on_device) == trainer.optimizer.steps == 16
    eager, graph = (load_checkpoint(tmp_path / name / "last.npz") for name in ("eager", "graph"))
    for key in eager.weights:
        assert numpy.array_equal(eager.weights[key], graph.weights[key]), key
    for key in ("exp_avg", "exp_avg_sq", "steps"):
        assert numpy.array_equal(eager.optimizer[key], graph.optimizer[key]), key


def test_a_graph_run_killed_and_resumed_ends_as_an_eager_run_does(tmp_path, monkeypatch):
    """Resume stays exact on the graph path: the resumed run warms up, captures and replays
    again from the checkpoint (saved every 4 steps; killed after step 6 of 8 in epoch 1)."""
    from test_training import Crash, crash_after_steps
    from xpnn.training import resume_run
    config = lenet(epochs=2, batch_size=40)
    start_run(config, CPU, tmp_path / "eager", **SMALL).fit()

    def with_graph(trainer):
        graphed(trainer, lambda captured: [captured.index])
        return trainer

    restore = crash_after_steps(monkeypatch, 6)
    with pytest.raises(Crash):
        with_graph(start_run(config, CPU, tmp_path / "graph", **SMALL)).fit()
    restore()
    resumed = with_graph(resume_run(tmp_path / "graph", CPU, progress=False,
                                    echo=lambda line: None))
    assert (resumed.epoch, resumed.step) == (0, 4)
    resumed.fit()
    assert_same_run(tmp_path / "eager", tmp_path / "graph")


def test_a_step_that_waits_for_the_device_cannot_be_captured():
    stats = RunningStats(numpy)
    for wait in (stats.read, CPU.synchronize):
        step = GraphStep(wait, HostGraphs(lambda: []))
        step(1)  # the warm-up runs eagerly, where waiting is allowed
        with pytest.raises(GraphCaptureError, match="waits for the device inside a captured"):
            step(1)
        forbid_host_sync("after the failed capture")  # raises while capturing
    forbid_host_sync("outside a capture, anything")


def test_a_step_keeps_one_graph_per_batch_size():
    ran = []
    runtime = HostGraphs(lambda: [])
    step = GraphStep(lambda: ran.append(1), runtime)
    for size in [4, 4, 4, 2, 2, 4]:
        step(size)
    assert runtime.events == ["capture", "launch", "launch", "capture", "launch", "launch"]
    assert (step.eager_runs, step.captures, step.replays) == (2, 2, 4)
    assert len(runtime.pools) == 1  # one private pool, alive as long as the step


def test_a_graph_mode_is_refused_on_the_cpu_in_one_line(tmp_path):
    from xpnn.backend import Mode, ModeError
    with pytest.raises(ModeError, match="a CUDA graph captures the training step on a GPU, "
                                        "but this run is on cpu"):
        start_run(lenet(epochs=1), CPU, tmp_path / "run", mode=Mode(graph=True), **SMALL)
    assert not (tmp_path / "run").exists()


# -- on a GPU -----------------------------------------------------------------------------------

def _gpu():
    from xpnn.backend import get_device, gpu_unavailable_reason
    reason = gpu_unavailable_reason()
    if reason is not None:
        pytest.skip(f"no usable GPU: {reason}")
    return get_device("gpu")


@pytest.mark.gpu
def test_on_a_gpu_replayed_steps_equal_eager_steps_with_the_same_gemm(tmp_path):
    """The real thing: CuPy's capture and cuBLAS through nvmath-python. Graph replays give the
    weights of eager steps in the same mode (the graph's GEMM, cuBLAS) bit for bit, and of an
    eager mode (CuPy's GEMM) within float32 rounding."""
    from xpnn.backend import Mode
    gpu = _gpu()
    config = lenet(epochs=2, batch_size=40)
    trainer = start_run(config, gpu, tmp_path / "graph", mode=Mode(graph=True), **SMALL)
    trainer.fit()
    assert trainer.run_step.graph.replays == 14
    same_mode = start_run(config, gpu, tmp_path / "eager-cublas", mode=Mode(graph=True), **SMALL)
    same_mode.run_step = same_mode.training_step  # its steps eager, in the graph's mode
    same_mode.fit()
    start_run(config, gpu, tmp_path / "eager", mode=Mode(), **SMALL).fit()
    from xpnn.training.checkpoint import load_checkpoint
    from xpnn.training.metrics import read_metrics
    ours, same_gemm, eager = (load_checkpoint(tmp_path / name / "last.npz")
                              for name in ("graph", "eager-cublas", "eager"))
    for name, weight in same_gemm.weights.items():  # evaluation is eager (CuPy's GEMM) in both
        assert numpy.array_equal(ours.weights[name], weight), name
    assert numpy.array_equal(ours.optimizer["velocity"], same_gemm.optimizer["velocity"])
    assert ours.optimizer["steps"] == same_gemm.optimizer["steps"] == 16
    assert [(r["train_loss"], r["train_acc"]) for r in read_metrics(tmp_path / "graph")] == [
        (r["train_loss"], r["train_acc"]) for r in read_metrics(tmp_path / "eager-cublas")]
    for name, weight in eager.weights.items():
        numpy.testing.assert_allclose(ours.weights[name], weight, rtol=1e-4, atol=1e-5,
                                      err_msg=name)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_on_a_gpu_every_mode_multiplies_every_layout(mode):
    from xpnn.backend import Mode, running_on
    from xpnn.backend.matmul import GemmUnavailableError, matmul
    gpu = _gpu()
    rng = numpy.random.default_rng(0)
    a = rng.standard_normal((7, 5)).astype(numpy.float32)
    b = rng.standard_normal((5, 3)).astype(numpy.float32)
    cases = [(a, b), (numpy.asfortranarray(a), b), (a, numpy.asfortranarray(b)),
             (a[:, ::-1], b[::-1]), (a[0], b)]
    try:
        with running_on(gpu, Mode(graph=mode == "graph")):
            for x, y in cases:
                got = gpu.to_numpy(matmul(gpu.send(x), gpu.send(y)))
                numpy.testing.assert_allclose(got, x @ y, rtol=1e-5, atol=1e-5)
    except GemmUnavailableError as error:
        pytest.skip(str(error))


def test_a_graph_mode_is_refused_on_several_ranks_in_one_line(tmp_path):
    import types
    from xpnn.backend import Mode, ModeError
    from xpnn.training.runs import load_data
    from xpnn.training.trainer import Trainer
    config = lenet(epochs=1)
    two_ranks = types.SimpleNamespace(size=2, is_root=True)
    gpu = types.SimpleNamespace(is_gpu=True, name="cuda:0")
    with pytest.raises(ModeError, match="a CUDA graph captures one process's step, but this "
                                        "run has 2 ranks; run with --eager"):
        Trainer(config, load_data(config), gpu, tmp_path, ranks=two_ranks,
                mode=Mode(graph=True))
