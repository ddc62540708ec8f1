"""Parity: run one layer or network under two (device, dtype) settings with identical weights, and
compare the output of every top-level stage, the loss and every gradient.

    from xpnn import nets
    from xpnn.tools import parity

    rows = parity.compare(lambda: nets.build(model_config, seed=0), images, labels,
                          a=("cpu", "float64"), b=("gpu", "float32"))
    print(parity.format_report(rows))
    assert parity.worst(rows).max_rel_err < 1e-4

Setting `a` is the reference. Errors are measured per tensor: ``max_abs_err = max |a - b|`` and
``max_rel_err = max_abs_err / max |a|`` (one scale per tensor, so entries near zero do not blow
it up). NaN or infinity where the reference has a finite value counts as an infinite error.

A network is recognised by its ``forward_loss``, ``layers`` and ``loss_layer`` attributes.
"""
import dataclasses

import numpy

from xpnn.backend import CPU, get_device, running_on

TINY = 1e-30


@dataclasses.dataclass(frozen=True)
class ParityRow:
    """One compared tensor.

    name: ``layers.3 ConvLayer`` (a stage's output), ``logits``, ``loss``, ``input_grad``, or a
        parameter's dotted name (its gradient).
    kind: ``"output"``, ``"loss"``, ``"input_grad"`` or ``"param_grad"``.
    """
    name: str
    kind: str
    max_abs_err: float
    max_rel_err: float
    shape: tuple = ()


def tensor_errors(reference, other):
    """Return ``(max |reference - other|, that / max |reference|)`` as floats, over host copies."""
    reference = numpy.asarray(CPU.to_numpy(reference), dtype=numpy.float64)
    other = numpy.asarray(CPU.to_numpy(other), dtype=numpy.float64)
    if reference.shape != other.shape:
        raise ValueError(f"cannot compare tensors of shapes {reference.shape} and {other.shape}")
    reference, other = reference.reshape(-1), other.reshape(-1)
    with numpy.errstate(invalid="ignore"):
        diff = numpy.abs(reference - other)
    diff[reference == other] = 0.0               # equal infinities agree
    diff[numpy.isnan(diff)] = numpy.inf          # NaN on either side is a failure
    max_abs = float(diff.max(initial=0.0))
    finite_reference = numpy.abs(reference[numpy.isfinite(reference)])
    scale = float(finite_reference.max(initial=0.0))
    return max_abs, (max_abs / max(scale, TINY) if max_abs else 0.0)


def compare(build, inputs, labels=None, a=("cpu", "float64"), b=("cpu", "float32"),
            stages=True, grad_seed=0, mode=None):
    """Run a freshly built model under settings `a` and `b` and compare what they compute.

    Args:
        build: zero-argument callable returning a *new* `layers.Layer` or `nets.Network` each
            call (e.g. ``lambda: nets.build(config, seed=0)``). The second model is loaded with
            the first one's weights, so the two start identical even if `build` is not seeded.
        inputs: host (or device) array, or a tuple of them for a layer of several inputs
            (`AddLayer`). Floating inputs are cast to each setting's dtype.
        labels: integer class labels: required for a network (forward_loss, then backward from
            the loss); for a loss layer, passed to forward after the inputs.
        a, b: ``(device, dtype)`` settings, e.g. ``("cpu", "float64")``, ``("gpu", "float32")``;
            `a` is the reference.
        stages: for a network (or a `SequentialLayer`), also run its top-level layers one by
            one and compare each one's output, to find where two settings part.
        grad_seed: seed of the fixed random upstream gradient given to a layer that is not a
            loss (a network or loss layer starts backward from its loss instead).
        mode: the `backend.Mode` a setting on a GPU computes in (None: as set around the call).
    Returns:
        a list of `ParityRow`, in order: stage outputs, output (logits), loss, input gradients,
        parameter gradients (in `named_parameters` order).
    """
    model_a, model_b = build(), build()
    if model_a is model_b:
        raise ValueError("build() returned the same object twice; it must build a new model "
                         "each call (e.g. lambda: nets.build(config, seed=0))")
    model_b.load_state_dict(model_a.state_dict())
    inputs = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
    if _is_network(model_a) and labels is None:
        raise ValueError("comparing a network needs labels: it runs forward_loss and backward")
    results_a = _run(model_a, a, inputs, labels, stages, grad_seed, mode)
    results_b = _run(model_b, b, inputs, labels, stages, grad_seed, mode)
    rows = []
    for (name, kind, value_a), (_, _, value_b) in zip(results_a, results_b):
        max_abs, max_rel = tensor_errors(value_a, value_b)
        rows.append(ParityRow(name, kind, max_abs, max_rel, tuple(value_a.shape)))
    return rows


def worst(rows):
    """The row of largest relative error (None for no rows)."""
    return max(rows, key=lambda row: row.max_rel_err, default=None)


def format_report(rows, title=None):
    """A plain-text table of `rows`, one line each, ending with the worst one."""
    name_width = max([len("tensor")] + [len(row.name) for row in rows])
    lines = [title] if title else []
    header = f"{'tensor':<{name_width}}  {'kind':<10}  {'shape':<18}  {'max abs err':>11}  {'max rel err':>11}"
    lines += [header, "-" * len(header)]
    for row in rows:
        shape = "x".join(map(str, row.shape)) or "scalar"
        lines.append(f"{row.name:<{name_width}}  {row.kind:<10}  {shape:<18}  "
                     f"{row.max_abs_err:>11.3e}  {row.max_rel_err:>11.3e}")
    bad = worst(rows)
    if bad is not None:
        lines.append(f"worst: {bad.name} ({bad.kind}), max rel err {bad.max_rel_err:.3e}")
    return "\n".join(lines)


# -- one run ----------------------------------------------------------------------------------------

def _is_network(model):
    return all(hasattr(model, name) for name in ("forward_loss", "layers", "loss_layer"))


def _stage_container(model):
    """(layer whose children are the top-level stages, name prefix), or None for a single layer."""
    if _is_network(model):
        return model.layers, "layers."
    if isinstance(getattr(model, "layers", None), list):  # a SequentialLayer
        return model, ""
    return None


def _send(device, array, dtype):
    host = CPU.to_numpy(array)
    if numpy.issubdtype(host.dtype, numpy.floating):
        host = host.astype(dtype, copy=False)
    return device.send(host)


def _run(model, setting, inputs, labels, stages, grad_seed, mode):
    """Run forward and backward once under `setting`; return [(name, kind, host array)]."""
    device = get_device(setting[0])
    with running_on(device, mode if device.is_gpu else None):
        return _run_on(model, device, setting[1], inputs, labels, stages, grad_seed)


def _run_on(model, device, dtype, inputs, labels, stages, grad_seed):
    model.to(device, dtype=dtype)
    model.zero_grad()
    xs = [_send(device, x, dtype) for x in inputs]
    label_args = () if labels is None else (device.send(CPU.to_numpy(labels)),)
    results = []

    def record(name, kind, value):  # host copy now: a later layer may reuse the buffer
        results.append((name, kind, CPU.to_numpy(value).copy()))

    container = _stage_container(model) if stages else None
    if container is not None:
        parent, prefix = container
        h = xs[0]
        for child_name, layer in parent.named_children():
            h = layer.forward(h)
            record(f"{prefix}{child_name} {type(layer).__name__}", "output", h)

    if _is_network(model):
        loss, logits = model.forward_loss(xs[0], *label_args)
        record("logits", "output", logits)
        record("loss", "loss", loss)
        input_grads = model.backward()
    else:
        out = model.forward(*xs, *label_args)
        if labels is not None:  # a loss layer: backward from the loss itself
            record("loss", "loss", out)
            input_grads = model.backward()
        else:
            record("output", "output", out)
            upstream = numpy.random.default_rng(grad_seed).standard_normal(out.shape)
            input_grads = model.backward(_send(device, upstream, dtype))

    if not isinstance(input_grads, tuple):
        input_grads = (input_grads,)
    for index, grad in enumerate(input_grads):
        if grad is not None:
            record("input_grad" if len(input_grads) == 1 else f"input_grad[{index}]",
                   "input_grad", grad)
    for name, param in model.named_parameters():
        record(name, "param_grad", param.grad)
    return results
