"""`xpnn describe`: the network of a config, printed as the write-up prints it."""
import click

from xpnn.cli.options import config_option, load_config, set_option


@click.command()
@config_option(required=True)
@set_option
def describe(config_spec, overrides):
    """Print the network of CONFIG and its parameter count."""
    from xpnn.nets import build

    config = load_config(config_spec, overrides)
    net = build(config["model"], seed=config["train"]["seed"])
    click.echo(repr(net))
    click.echo(f"Total parameters: {net.num_parameters():,}")
