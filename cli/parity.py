"""`xpnn parity`: one batch through a config's network under two (device, dtype) settings."""
import functools
import json
import math

import click

from xpnn.cli.options import (command_mode, config_option, data_dir_option, device_option,
                              load_config, mode_options, precision_option, set_option)

DTYPES = click.Choice(["float32", "float64"])


def _number(value):
    """`value` for strict JSON: a float, or "inf" / "nan"."""
    return value if math.isfinite(value) else str(value)


@click.command()
@config_option(required=True)
@set_option
@device_option("--device-a", "cpu", "the reference device")
@click.option("--dtype-a", type=DTYPES, default="float64", show_default=True,
              help="the reference's float type")
@device_option("--device-b", None, "the device compared with the reference  [default: gpu "
                                   "where one is usable, else cpu]")
@click.option("--dtype-b", type=DTYPES, default="float32", show_default=True,
              help="the compared setting's float type")
@mode_options()
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="test images in the batch")
@precision_option("what the GPU's matrix products compute in (tf32, bf16: tensor-core inputs, "
                  "float32 accumulation)  [default: fp32]")
@click.option("--tolerance", type=click.FloatRange(min=0),
              help="the largest relative error that passes  [default: the precision's: "
                   "fp32 1e-4, tf32 3e-3, bf16 3e-2]")
@data_dir_option
@click.option("--json", "as_json", is_flag=True,
              help="print one JSON object (both settings, every tensor's errors, the verdict) "
                   "instead of the table; the exit code still says pass (0) or fail (1)")
@click.pass_context
def parity(ctx, config_spec, overrides, device_a, dtype_a, device_b, dtype_b, array_code, eager,
           batch_size, precision, tolerance, data_dir, as_json):
    """Run one batch through CONFIG's network under two settings and compare every layer's
    output, the loss and every gradient.

    The reference is --device-a/--dtype-a (default: the CPU in float64); on a machine with only
    a CPU the default compares its float32 path with it. A GPU setting computes in the GPU's
    mode: the fused kernels unless --array-code and, unless --eager, the CUDA-graph step's GEMM
    (not captured: a parity run reads every layer's output).
    """
    from xpnn.backend import get_device, gpu_unavailable_reason
    from xpnn.backend.precision import PARITY_TOLERANCE
    from xpnn.tools.parity import compare, format_report, worst
    from xpnn.nets import build
    from xpnn.training.batches import to_float
    from xpnn.training.runs import load_data

    config = load_config(config_spec, overrides)
    note = None
    if device_b is None:
        reason = gpu_unavailable_reason()
        device_b = "cpu" if reason else "gpu"
        if reason:
            why = reason.removeprefix("GPU requested but ").split(";")[0]
            note = (f"no GPU here ({why}): compared the CPU's {dtype_b} path with its "
                    f"{dtype_a} reference")
    a, b = get_device(device_a), get_device(device_b)  # an unusable device fails before any work
    dataset = load_data(config, data_dir)
    inputs = to_float(dataset.test_images[:batch_size])
    labels = dataset.test_labels[:batch_size].copy()
    make_network = functools.partial(build, config["model"], config["train"]["seed"])
    gpu = a if a.is_gpu else b
    precision = precision or "fp32"
    if precision != "fp32" and not gpu.is_gpu:
        raise click.UsageError(f"--precision {precision} is a GPU's tensor-core arithmetic, and "
                               f"neither setting is on a GPU; compare with --device-b gpu")
    tolerance = PARITY_TOLERANCE[precision] if tolerance is None else tolerance
    mode = (command_mode(gpu, eager=eager, array_code=array_code, precision=precision)
            if gpu.is_gpu else None)
    rows = compare(make_network, inputs, labels, a=(a.name, dtype_a), b=(b.name, dtype_b),
                   mode=mode)
    bad = worst(rows)
    passed = bad is None or bad.max_rel_err <= tolerance
    what = (f"{config['model']['name']} ({config_spec}), {len(labels)} test images: "
            f"{a.name} {dtype_a} (reference) against {b.name} {dtype_b}"
            + (f" at precision {precision}" if precision != "fp32" else ""))
    if as_json:
        click.echo(json.dumps({
            "compared": what, "note": note, "config": str(config_spec),
            "a": {"device": a.name, "dtype": dtype_a}, "b": {"device": b.name, "dtype": dtype_b},
            "batch_size": len(labels), "tolerance": tolerance, "passed": passed,
            "worst": None if bad is None else {"name": bad.name, "kind": bad.kind,
                                               "max_rel_err": _number(bad.max_rel_err)},
            "rows": [{"name": row.name, "kind": row.kind, "shape": list(row.shape),
                      "max_abs_err": _number(row.max_abs_err),
                      "max_rel_err": _number(row.max_rel_err)} for row in rows],
        }))
        ctx.exit(0 if passed else 1)
    click.echo(f"compared {what}")
    if note:
        click.echo(note)
    click.echo(format_report(rows))
    if not passed:
        raise click.ClickException(f"parity fails: worst relative error {bad.max_rel_err:.3g} "
                                   f"({bad.name}, {bad.kind}) exceeds the tolerance {tolerance:g}")
    click.echo("parity passes: " + ("nothing to compare" if bad is None else
                                    f"worst relative error {bad.max_rel_err:.3g} ({bad.name}, "
                                    f"{bad.kind}) is within the tolerance {tolerance:g}"))
