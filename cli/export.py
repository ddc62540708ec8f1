"""`xpnn export`: a trained network in a format other tools run."""
from pathlib import Path

import click

from xpnn.cli.options import output_option


@click.command()
@click.argument("source", metavar="RUN_DIR|CHECKPOINT", type=click.Path(path_type=Path))
@click.option("--format", "file_format", type=click.Choice(["onnx"]), default="onnx",
              show_default=True, help="the file format")
@output_option("file to write  [default: RUN_DIR/model.onnx, or CHECKPOINT with .onnx]")
def export(source, file_format, output):
    """Write the network of RUN_DIR (its best.npz, else last.npz) or CHECKPOINT as an ONNX model.

    The model takes "images" (N, C, H, W), pixel levels / 255, and gives "logits" and their
    softmax, "probabilities"; it is checked with onnx.checker before it is written.
    """
    from xpnn.inference.onnx_export import export_onnx
    from xpnn.training.runs import load_trained

    trained = load_trained(source)
    if output is None:
        output = source / "model.onnx" if source.is_dir() else source.with_suffix(".onnx")
    model = export_onnx(trained, output)
    operators = sorted({node.op_type for node in model.graph.node})
    click.echo(f"wrote {output}: {trained.net.name} ({trained.checkpoint.path}, epoch "
               f"{trained.checkpoint.epoch}) as ONNX opset {model.opset_import[0].version}, "
               f"operators {', '.join(operators)}")
