"""The training step that training, CUDA-graph capture and the benchmarks run (DESIGN.md)."""
from xpnn.backend import get_array_module
from xpnn.backend.batch_stats import add_batch_stats
from xpnn.backend.communicator import Ranks
from xpnn.backend.warp import warp_affine
from xpnn.training.batches import to_float


class TrainingStep:
    """One optimizer step of `model` (a `Network` or `nets.DataParallel`) and its `optimizer`
    on a batch gathered from `images` (N, C, H, W) uint8 and `labels` (N,) int64 on the device;
    the batch's sums go to `stats` (`training.metrics.RunningStats`), the gradients are summed
    over `ranks` in rank order. `loss`: the last step's mean loss (0-d device array)."""

    def __init__(self, model, optimizer, images, labels, stats, ranks=None):
        self.model, self.optimizer = model, optimizer
        self.images, self.labels = images, labels
        self.stats = stats
        self.ranks = ranks if ranks is not None else Ranks()
        self.xp = get_array_module(images)
        self.loss = None

    def __call__(self, index, lr, maps=None, batch_size=None):
        """One step at learning rate `lr` on the batch of `batch_size` images (default: all of
        `index`) of which this rank computes `index` (device int64), each warped by its row of
        `maps` (device (len(index), 2, 3); None: no augmentation)."""
        self.optimizer.lr = lr
        self.run(index, maps, len(index) / (batch_size or len(index)))
        self.count(len(index))

    def run(self, index, maps=None, share=1.0):
        """The device work: `share` is this rank's part of the batch (its gradients are scaled
        by it, so the ranks' add up to the batch's mean)."""
        xp = self.xp
        images = to_float(xp.take(self.images, index, axis=0))
        if maps is not None:
            images = warp_affine(images, maps)
        labels = xp.take(self.labels, index)
        self.optimizer.zero_grad()
        self.loss, logits = self.model.forward_loss(images, labels)
        add_batch_stats(self.stats.loss_sum, self.stats.correct, self.loss, logits, labels)
        self.model.backward(share)
        self.ranks.sum_in_rank_order(self.optimizer.grad)
        self.optimizer.update()

    def count(self, size):
        """The host's part: one more optimizer step, `size` more images seen."""
        self.optimizer.steps += 1
        self.stats.seen += size
