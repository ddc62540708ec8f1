"""CUDA graphs: a step of device work captured once and replayed with one launch. The step must
be device work only: it reads what changes between steps from static buffers, never waits for
the device (`forbid_host_sync`), and multiplies through `backend.matmul`."""
import contextlib
import contextvars

_CAPTURING = contextvars.ContextVar("xpnn_capturing", default=False)


class GraphCaptureError(RuntimeError):
    """Something inside a captured step that a CUDA graph cannot hold."""


@contextlib.contextmanager
def set_for_block(variable, value):
    """A block with the context variable `variable` set to `value`."""
    token = variable.set(value)
    try:
        yield
    finally:
        variable.reset(token)


def forbid_host_sync(what):
    """Raise `GraphCaptureError` if a step is being captured: `what` would wait for the device."""
    if _CAPTURING.get():
        raise GraphCaptureError(f"{what} waits for the device inside a captured CUDA-graph step; "
                                f"move it out of the step")


class GraphStep:
    """`run()` as one CUDA graph per `shape_key`, from a private memory pool: its first call
    runs eagerly, the next captures and replays. Counts `captures`, `eager_runs` and `replays`."""

    def __init__(self, run, runtime):
        self.run, self.runtime = run, runtime
        self.stream = runtime.new_stream()
        self.pool = runtime.new_pool()  # lives as long as this object and its graphs
        self.graphs = {}                # shape_key -> captured graph (None: warmed up)
        self.captures = self.eager_runs = self.replays = 0

    def __call__(self, shape_key):
        with self.runtime.ordered_on(self.stream), self.runtime.allocating_from(self.pool):
            if shape_key not in self.graphs:
                self.run()
                self.graphs[shape_key] = None
                self.eager_runs += 1
                return
            if self.graphs[shape_key] is None:
                with set_for_block(_CAPTURING, True):
                    self.graphs[shape_key] = self.runtime.capture(self.stream, self.run)
                self.captures += 1
            self.runtime.launch(self.graphs[shape_key], self.stream)
            self.replays += 1


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
        """`stream` current within the block, ordered by events among the caller's work."""
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
