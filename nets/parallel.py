"""Data parallelism over CPU threads: one replica of the network per worker, weights shared."""
import contextvars
import copy
from concurrent.futures import ThreadPoolExecutor

from xpnn.backend import get_array_module, keep_freed_memory, set_blas_threads
from xpnn.backend.communicator import even_slices


class DataParallel:
    """Runs a `Network`'s `forward`, `forward_loss` and `backward` on `workers` slices of each
    batch at once, one thread and replica each (with workers=1: `net` itself).

    Replicas share `net`'s parameter arrays and keep their own gradients, which `backward` adds
    into `net`'s in a fixed order: bit-identical run after run. On the CPU it sets BLAS to one
    thread for the process and keeps freed memory (`backend.keep_freed_memory`).
    """

    def __init__(self, net, workers=2):
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self.net = net
        self.workers = workers
        self.replicas = [net] + [_replica_sharing_weights(net) for _ in range(workers - 1)]
        self._pool = ThreadPoolExecutor(workers - 1) if workers > 1 else None
        self._shares = [1.0]
        if get_array_module(*[p.data for p in net.parameters()]).__name__ == "numpy":
            set_blas_threads(1)
            keep_freed_memory()

    def _run(self, calls):
        """Run ``calls[i]()`` for every i at once (the first on this thread), each in a copy of
        the caller's context (so NumPy's `errstate` holds there too); return their results."""
        futures = [self._pool.submit(contextvars.copy_context().run, call) for call in calls[1:]]
        return [calls[0]()] + [future.result() for future in futures]

    def _split(self, n, call):
        """Run ``call(replica, items)`` on `min(workers, n)` contiguous slices of n items (as MPI
        ranks split a batch), with the replicas pointed at the network's arrays (fresh gradients
        where it was cast since); return (the slices, the results)."""
        for replica in self.replicas[1:]:
            for mine, theirs in zip(replica.parameters(), self.net.parameters()):
                mine.data = theirs.data
                if mine.grad.dtype != theirs.data.dtype:
                    mine.grad = get_array_module(theirs.data).zeros_like(theirs.data)
        slices = even_slices(n, min(self.workers, n))
        return slices, self._run([lambda r=r, s=s: call(r, s)
                                  for r, s in zip(self.replicas, slices)])

    def forward(self, x):
        """Logits (N, classes) for images (N, ...)."""
        if self.workers == 1:
            return self.net.forward(x)
        _, outputs = self._split(x.shape[0], lambda replica, s: replica.forward(x[s]))
        return get_array_module(outputs[0]).concatenate(outputs)

    def forward_loss(self, x, labels):
        """(mean loss over the whole batch as a 0-d array, logits (N, classes))."""
        if self.workers == 1:
            return self.net.forward_loss(x, labels)
        n = x.shape[0]
        slices, results = self._split(n, lambda replica, s: replica.forward_loss(x[s], labels[s]))
        self._shares = [(s.stop - s.start) / n for s in slices]
        loss = sum(share * part_loss for share, (part_loss, _) in zip(self._shares, results))
        logits = get_array_module(x).concatenate([part_logits for _, part_logits in results])
        return loss, logits

    def backward(self, grad_out=1.0):
        """Backward from `grad_out` times the batch's mean loss through every replica, then add
        their gradients into the network's."""
        if self.workers == 1:
            return self.net.backward(grad_out)
        active = self.replicas[:len(self._shares)]
        self._run([lambda r=r, share=share: r.backward(share * grad_out)
                   for r, share in zip(active, self._shares)])
        for replica in active[1:]:
            for total, part in zip(self.net.parameters(), replica.parameters()):
                total.grad += part.grad
                part.grad[...] = 0


def _replica_sharing_weights(net):
    """A deep copy of `net` whose parameters use `net`'s data arrays and fresh zero gradients."""
    shared = {id(param.data): param.data for param in net.parameters()}
    replica = copy.deepcopy(net, memo=shared)
    for param in replica.parameters():
        param.grad = get_array_module(param.data).zeros_like(param.data)
    return replica
