"""The evaluation after each training epoch: the validation and test sets, in batches sized for
the device."""
from xpnn.training.metrics import evaluate

# Large on a GPU (fewer launches); small on the CPU, where larger batches cost memory, not time.
EVAL_BATCH_SIZE = {"cpu": 200, "gpu": 1000}


def evaluate_epoch(model, evaluated, device, should_stop=None):
    """Yield (name, `metrics.Evaluation`) for each (name: (device images, device labels)) of
    `evaluated`, in order; the evaluation is None where `should_stop()` cut it short."""
    batch_size = EVAL_BATCH_SIZE["gpu" if device.is_gpu else "cpu"]
    for name, (images, labels) in evaluated.items():
        yield name, evaluate(model, images, labels, batch_size, should_stop=should_stop)
