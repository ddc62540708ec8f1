"""A training step as a CUDA graph (DESIGN.md: "The training step as one CUDA graph")."""
from xpnn.backend.graphs import CupyGraphs, GraphStep


class CapturedStep:
    """`step` (a `training.step.TrainingStep` on one rank) replayed as one CUDA graph per batch
    size; `runtime`: the graph runtime (None: `CupyGraphs` on the step's array module)."""

    def __init__(self, step, runtime=None):
        self.step = step
        step.optimizer.keep_lr_on_device()
        self.indices, self.all_maps = {}, {}  # batch size -> its static index, maps buffer
        self.index, self.maps = None, None      # the step's buffers (maps None: no augmentation)
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
        """The static buffer of `buffers` for `values`' batch size, `values` copied into it."""
        size = int(values.shape[0])
        if size not in buffers:
            buffers[size] = self.step.xp.empty(values.shape, dtype=values.dtype)
        buffers[size][...] = values
        return buffers[size]

    def _run(self):
        self.step.run(self.index, self.maps)
