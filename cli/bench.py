"""`xpnn bench`: time full training steps of a config's network."""
import json

import click

from xpnn.cli.options import (command_mode, config_option, device_option, load_config,
                              mode_options, precision_option, set_option)


@click.command()
@config_option(required=True)
@set_option
@device_option()
@mode_options()
@precision_option("what a GPU's matrix products compute in  [default: the config's "
                  "train.precision]")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="images per step  [default: the config's train.batch_size]")
@click.option("--steps", type=click.IntRange(min=1), default=30, show_default=True,
              help="timed steps")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True,
              help="untimed steps first")
@click.option("--profile", is_flag=True, help="add a per-layer timing table")
@click.option("--workers", type=click.IntRange(min=0),
              help="CPU worker threads as in training  [default: one per core; 0: the bare "
                   "network with BLAS on every core]")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3,
              show_default=True, help="learning rate (a step costs the same at any rate; the "
                                      "configs' rates can diverge on a fixed random batch)")
@click.option("--seed", type=int, default=0, show_default=True, help="weights and batch")
@click.option("--subprocess", "fresh_process", is_flag=True,
              help="run in a fresh process, so the peak memory is this run's alone")
@click.option("--json", "as_json", is_flag=True, help="print the result as one JSON object")
def bench(config_spec, overrides, device, array_code, eager, precision, batch_size, steps, warmup,
          profile, workers, lr, seed, fresh_process, as_json):
    """Time full training steps (forward, loss, backward, optimizer step) of CONFIG's network."""
    from xpnn.backend import get_device
    from xpnn.tools.bench import benchmark, benchmark_in_subprocess

    config = load_config(config_spec, overrides)
    mode = command_mode(get_device(device), 1, eager, array_code,
                        precision or config["train"]["precision"])
    if mode.graph and profile:
        raise click.UsageError("--profile times each layer, which a step replayed as one CUDA "
                               "graph cannot show; add --eager")
    options = dict(batch_size=batch_size or config["train"]["batch_size"], steps=steps,
                   warmup=warmup, profile=profile, seed=seed, lr=lr, workers=workers, mode=mode)
    if fresh_process:
        result = benchmark_in_subprocess(config, device, label=config_spec, **options)
    else:
        result = benchmark(config, get_device(device), **options)
        result.label = config_spec
    click.echo(json.dumps(result.to_dict()) if as_json else result.format())
