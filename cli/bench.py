"""`xpnn bench`: time full training steps of a config's network."""
import click

from xpnn.cli.options import config_option, device_option, fused_option, load_config, set_option


@click.command()
@config_option(required=True)
@set_option
@device_option()
@fused_option
@click.option("--batch-size", type=click.IntRange(min=1),
              help="images per step  [default: the config's train.batch_size]")
@click.option("--steps", type=click.IntRange(min=1), default=30, show_default=True,
              help="timed steps")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True,
              help="untimed steps first")
@click.option("--profile", is_flag=True, help="add a per-layer timing table")
def bench(config_spec, overrides, device, batch_size, steps, warmup, profile):
    """Time full training steps (forward, loss, backward, optimizer step) of CONFIG's network."""
    from xpnn.backend import get_device
    from xpnn.training.bench import benchmark

    config = load_config(config_spec, overrides)
    result = benchmark(config, get_device(device), batch_size or config["train"]["batch_size"],
                       steps, warmup, profile)
    click.echo(result.format())
