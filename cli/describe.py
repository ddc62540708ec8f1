"""`xpnn describe`: the network of a config, printed as the write-up prints it."""
import click

from xpnn.cli.options import config_option, load_config, set_option


@click.command()
@config_option(required=True)
@set_option
@click.option("--shapes", is_flag=True,
              help="also a table of each layer's output shape, parameter count and forward "
                   "FLOPs per image (a multiply-add counts 2)")
def describe(config_spec, overrides, shapes):
    """Print the network of CONFIG and its parameter count."""
    from xpnn.nets import build
    from xpnn.nets.summary import format_rows, layer_rows

    config = load_config(config_spec, overrides)
    net = build(config["model"], seed=config["train"]["seed"])
    click.echo(repr(net))
    if shapes:
        click.echo(format_rows(layer_rows(net), net.input_shape))
    click.echo(f"Total parameters: {net.num_parameters():,}")
