"""A training step as a CUDA graph: `backend.graphs.GraphStep` holding a `TrainingStep`'s device
work, as PyTorch's ``make_graphed_callables`` holds a module's.

    step = CapturedStep(TrainingStep(...))
    step(index, lr, maps)          # called as the step itself is

Before each replay the batch's indices and maps go into static buffers (one each per batch
size) and the learning rate into the optimizer's device rate; after it, the step's host count.
A replay computes what an eager step in the graph mode computes, bit for bit.
"""
from xpnn.backend.graphs import CupyGraphs, GraphStep


class CapturedStep:
    """`step` (a `training.step.TrainingStep` on one rank) replayed as one CUDA graph per batch
    size; `runtime`: the graph runtime (None: `CupyGraphs` on the step's array module)."""

    def __init__(self, step, runtime=None):
        self.step = step
        step.optimizer.keep_lr_on_device()
        self.indices = {}   # batch size -> its static index buffer
        self.index = None   # the buffer of the step being run
        self.all_maps = {}  # batch size -> its static augmentation-map buffer
        self.maps = None    # the maps buffer of the step being run (None: no augmentation)
        self.graph = GraphStep(self._run, runtime or CupyGraphs(step.xp))

    def __call__(self, index, lr, maps=None, batch_size=None):
        """One step, as `TrainingStep.__call__` (one rank: `index` is the whole batch)."""
        size = int(index.shape[0])
        self.index = self._static(self.indices, index)
        if maps is not None:
            self.maps = self._static(self.all_maps, maps)
        self.step.optimizer.lr = lr
        self.graph(size)
        self.step.count(size)

    def _static(self, buffers, values):
        """The static buffer of `buffers` for `values`' batch size, `values` copied into it
        (queued device copies, before the step's work)."""
        size = int(values.shape[0])
        if size not in buffers:
            buffers[size] = self.step.xp.empty(values.shape, dtype=values.dtype)
        buffers[size][...] = values
        return buffers[size]

    def _run(self):
        self.step.run(self.index, self.maps)
