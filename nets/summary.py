"""A network's layers in a table: output shape, parameter count and forward FLOPs per image."""
from collections import namedtuple

# one top-level layer; output shape and FLOPs (a multiply-add is 2) for one image, no batch axis
LayerRow = namedtuple("LayerRow", "index name output_shape parameters flops")


def layer_rows(net):
    """A `LayerRow` per top-level layer of `net` (a `Network`), computed from shapes alone."""
    rows, shape = [], (1, *net.input_shape)
    for index, layer in enumerate(net.layers):
        flops = layer.forward_flops(shape)
        shape = layer.output_shape(shape)
        rows.append(LayerRow(index, layer.title(), shape[1:], layer.num_parameters(), flops))
    return rows


def format_rows(rows, input_shape):
    """The rows as a text table, with the input's shape first and the totals last."""
    def dims(shape):
        return " x ".join(map(str, shape))
    lines = [("layer", "output shape", "parameters", "FLOPs/image"),
             ("input", dims(input_shape), "", "")]
    lines += [(f"({row.index}) {row.name}", dims(row.output_shape), f"{row.parameters:,}",
               f"{row.flops:,}") for row in rows]
    lines.append(("total", "", f"{sum(r.parameters for r in rows):,}",
                  f"{sum(r.flops for r in rows):,}"))
    widths = [max(len(line[column]) for line in lines) for column in range(4)]
    return "\n".join(f"{a.ljust(widths[0])}  {b.ljust(widths[1])}  {c.rjust(widths[2])}  "
                     f"{d.rjust(widths[3])}".rstrip() for a, b, c, d in lines)
