"""The trainer's step as a CUDA graph (``xpnn train --cuda-graph``): `backend.graphs.GraphStep`
holding the batch gather, forward, loss, running sums, backward and optimizer update.

Before each replay the host writes what changes into static device buffers: the batch's indices
(one buffer per batch size) and the learning rate (`SGDOptimizer.keep_lr_on_device`); after it,
it counts the step and the images seen. Every product goes through the capturable GEMM `gemm`
(`backend.matmul`), in the warm-up step too, so a replay computes what an eager step with that
GEMM computes, bit for bit.
"""
from xpnn.backend.batch_stats import add_batch_stats
from xpnn.backend.graphs import CupyGraphs, GraphStep
from xpnn.backend.matmul import using_gemm
from xpnn.training.batches import to_float

DEFAULT_GEMM = "cublas"


class CapturedStep:
    """Called as ``captured(index, lr)`` in place of the trainer's eager step.

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
        self.graph = GraphStep(self._run, runtime or CupyGraphs(self.xp))

    def __call__(self, index, lr):
        """One step on the batch `index` (device int64) at learning rate `lr`."""
        trainer = self.trainer
        size = int(index.shape[0])
        if size not in self.indices:
            self.indices[size] = self.xp.empty(size, dtype=index.dtype)
        self.index = self.indices[size]
        self.index[...] = index          # queued device copies, before the step's work
        trainer.optimizer.lr = lr
        with using_gemm(self.gemm):
            self.graph(size, bound=(trainer.stats.loss_sum, trainer.stats.correct))
        trainer.optimizer.steps += 1
        trainer.stats.seen += size

    def _run(self):
        """The step's device work, reading only `self.index` and the optimizer's device rate."""
        trainer, xp = self.trainer, self.xp
        images = to_float(xp.take(trainer.train_images, self.index, axis=0))
        labels = xp.take(trainer.train_labels, self.index)
        trainer.optimizer.zero_grad()
        loss, logits = trainer.model.forward_loss(images, labels)
        add_batch_stats(trainer.stats.loss_sum, trainer.stats.correct, loss, logits, labels)
        trainer.model.backward()
        trainer.optimizer.update()
