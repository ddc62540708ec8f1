"""CUDA graphs: a step of device work captured once and replayed with one launch.

    graph_step = GraphStep(run, CupyGraphs(cupy))
    graph_step(shape_key)           # runs `run()` once: eagerly, or captured then replayed

On a GPU at MNIST sizes a training step is bound by the host launching its kernels from Python
one by one (BENCHMARKS.md); a CUDA graph launches the whole step at once. What that asks of `run`:

* it is device work only, reading everything that changes from one step to the next from
  *static buffers* (device arrays allocated once, written before each replay: the batch's index
  vector, the learning rate), because a replay re-runs the recorded kernels, not the Python;
* no host synchronisation inside it (`forbid_host_sync` raises where library code would wait);
* every matrix product through a capturable GEMM (`backend.matmul`: CuPy 14.2's own cuBLAS
  wrapper refuses to run during capture);
* host bookkeeping (step counters, images seen) done by the caller, outside `run`.

`GraphStep` keeps one graph per `shape_key`, which says what the kernels' shapes depend on (the
batch size: the short last batch of an epoch gets a graph of its own). The first call for a new
`shape_key` runs eagerly (warm-up: kernels compile, the GEMM library creates its handle and
workspace, the private pool grows to the step's size), the next captures and replays. Everything
allocated during warm-up and capture comes from a private memory pool kept alive with the graphs:
memory a graph's kernels use is never handed to other code. Work is ordered with the caller's
stream by events both ways (the graphs run on a stream of their own, as capture requires), so
nothing waits on the host.

`CupyGraphs` is the runtime on CuPy; the tests drive `GraphStep` with a stand-in runtime that
runs on NumPy (tests/test_graphs.py).
"""
import contextlib
import contextvars

_CAPTURING = contextvars.ContextVar("xpnn_capturing", default=False)


class GraphCaptureError(RuntimeError):
    """Something inside a captured step that a CUDA graph cannot hold."""


def capturing():
    """True while a step is being captured (in this thread)."""
    return _CAPTURING.get()


def forbid_host_sync(what):
    """Raise `GraphCaptureError` if a step is being captured: `what` would wait for the device,
    which breaks a capture (and would read a value the graph does not update)."""
    if _CAPTURING.get():
        raise GraphCaptureError(f"{what} waits for the device inside a captured CUDA-graph step; "
                                f"move it out of the step")


class GraphStep:
    """`run()` as one CUDA graph per shape; see the module's docstring.

    Attributes: `captures` (graphs captured so far), `eager_runs` (warm-up runs), `replays`.
    """

    def __init__(self, run, runtime):
        self.run, self.runtime = run, runtime
        self.stream = runtime.new_stream()
        self.pool = runtime.new_pool()  # private: lives as long as this object and its graphs
        self.graphs = {}                # shape_key -> captured graph
        self.warmed = set()
        self.captures = self.eager_runs = self.replays = 0

    def __call__(self, shape_key):
        """Do one step: warm up (eager), or capture and replay, or replay."""
        with self.runtime.ordered_on(self.stream), self.runtime.allocating_from(self.pool):
            if shape_key not in self.warmed:
                self.run()
                self.warmed.add(shape_key)
                self.eager_runs += 1
                return
            if shape_key not in self.graphs:
                self.graphs[shape_key] = self._capture()
                self.captures += 1
            self.runtime.launch(self.graphs[shape_key], self.stream)
            self.replays += 1

    def _capture(self):
        token = _CAPTURING.set(True)
        try:
            return self.runtime.capture(self.stream, self.run)
        finally:
            _CAPTURING.reset(token)


class CupyGraphs:
    """The `GraphStep` runtime on CuPy: streams, a private pool, capture and launch."""

    def __init__(self, cupy):
        self.cupy = cupy

    def new_stream(self):
        return self.cupy.cuda.Stream(non_blocking=True)  # the legacy stream cannot capture

    def new_pool(self):
        return self.cupy.cuda.MemoryPool()

    def allocating_from(self, pool):
        return self.cupy.cuda.using_allocator(pool.malloc)

    @contextlib.contextmanager
    def ordered_on(self, stream):
        """`stream` current within the block, after the caller's queued work and before the
        caller's next (device-side events, no host wait)."""
        caller = self.cupy.cuda.get_current_stream()
        stream.wait_event(caller.record())
        with stream:
            yield
        caller.wait_event(stream.record())

    def capture(self, stream, run):
        stream.begin_capture()
        try:
            run()
        except BaseException:
            with contextlib.suppress(Exception):  # end the broken capture; report `run`'s error
                stream.end_capture()
            raise
        graph = stream.end_capture()
        graph.upload(stream)
        return graph

    def launch(self, graph, stream):
        graph.launch(stream)
