"""Running sums of the loss and of correct predictions, kept on the device, added to without
waiting for it. ``fused``: batch_stats.cu, one kernel."""
from xpnn.backend.cuda import CudaKernel
from xpnn.backend.device import get_array_module
from xpnn.backend.dispatch import implementation

ADD_BATCH_STATS = CudaKernel("batch_stats.cu", "xpnn_add_batch_stats", ["int64", "int32"])


def add_batch_stats(loss_sum, correct, loss, logits, labels):
    """Add one batch, its mean `loss` (0-d), `logits` (N, K) and `labels` (N,), in place: the
    loss times the batch size to `loss_sum` (0-d float64), the correct predictions (argmax of
    `logits` equal to `labels`) to `correct` (0-d int64)."""
    xp = get_array_module(logits)
    if implementation(xp) == "fused":
        logits = xp.ascontiguousarray(logits)
        count = labels.shape[0]
        ADD_BATCH_STATS(count, (logits, labels.astype(xp.int64, copy=False),
                                xp.asarray(loss, dtype=logits.dtype), loss_sum, correct, count,
                                logits.shape[1]), logits.dtype)
    else:
        loss_sum += xp.multiply(loss, labels.shape[0], dtype=loss_sum.dtype)  # in float64
        correct += (logits.argmax(axis=1) == labels).sum()
