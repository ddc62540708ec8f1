"""The trainer's step as a CUDA graph (``xpnn train --cuda-graph``): `backend.graphs.GraphStep`
holding the batch gather, forward, loss, running sums, backward and optimizer update.

Before each replay the host writes what changes into static device buffers: the batch's indices
and, with augmentation, its maps (one buffer each per batch size; the warp is in the graph) and
the learning rate (`SGDOptimizer.keep_lr_on_device`); after it,
it counts the step and the images seen. Every product goes through the capturable GEMM `gemm`
(`backend.matmul`), in the warm-up step too, so a replay computes what an eager step with that
GEMM computes, bit for bit.
"""
from xpnn.backend.batch_stats import add_batch_stats
from xpnn.backend.graphs import CupyGraphs, GraphStep
from xpnn.backend.matmul import using_gemm
from xpnn.backend.warp import warp_affine
from xpnn.training.batches import to_float

DEFAULT_GEMM = "cublas"


class CapturedStep:
    """Called as ``captured(index, lr, maps)`` in place of the trainer's eager step.

    Args:
        trainer: the `Trainer` whose network, optimizer, data and running sums the step uses.
        runtime: the graph runtime (None: `CupyGraphs` on the trainer's device).
        gemm: the capturable GEMM (``cublas`` or ``cutensor``).
    """

    def __init__(self, trainer, runtime=None, gemm=DEFAULT_GEMM):
        self.trainer = trainer
        self.xp = trainer.device.xp
        self.gemm = gemm
        trainer.optimizer.keep_lr_on_device()
        self.indices = {}   # batch size -> its static index buffer
        self.index = None   # the buffer of the step being run
        self.all_maps = {}  # batch size -> its static augmentation-map buffer
        self.maps = None    # the maps buffer of the step being run (None: no augmentation)
        self.graph = GraphStep(self._run, runtime or CupyGraphs(self.xp))

    def __call__(self, index, lr, maps=None):
        """One step on the batch `index` (device int64) at learning rate `lr`, its images
        warped by `maps` (device (N, 2, 3), see `backend.warp`) unless that is None."""
        trainer = self.trainer
        size = int(index.shape[0])
        self.index = self._static(self.indices, index)
        if maps is not None:
            self.maps = self._static(self.all_maps, maps)
        trainer.optimizer.lr = lr
        with using_gemm(self.gemm):
            self.graph(size, bound=(trainer.stats.loss_sum, trainer.stats.correct))
        trainer.optimizer.steps += 1
        trainer.stats.seen += size

    def _static(self, buffers, values):
        """The static buffer of `buffers` for `values`' batch size, `values` copied into it
        (queued device copies, before the step's work)."""
        size = int(values.shape[0])
        if size not in buffers:
            buffers[size] = self.xp.empty(values.shape, dtype=values.dtype)
        buffers[size][...] = values
        return buffers[size]

    def _run(self):
        """The step's device work, reading only `self.index`, `self.maps` and the optimizer's
        device rate."""
        trainer, xp = self.trainer, self.xp
        images = to_float(xp.take(trainer.train_images, self.index, axis=0))
        if self.maps is not None:
            images = warp_affine(images, self.maps)
        labels = xp.take(trainer.train_labels, self.index)
        trainer.optimizer.zero_grad()
        loss, logits = trainer.model.forward_loss(images, labels)
        add_batch_stats(trainer.stats.loss_sum, trainer.stats.correct, loss, logits, labels)
        trainer.model.backward()
        trainer.optimizer.update()
