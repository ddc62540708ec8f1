"""Build a `Network` from a config's ``model`` section (name, input_shape, num_classes, layers:
configs/*.yaml). Each ``layers`` item names a layer class and its constructor's arguments,
``- ReLULayer`` or ``- ConvLayer: {in_channels: 1, out_channels: 6, kernel_size: 5}``; the shapes
are checked through the whole chain before any weight is drawn.
"""
import inspect
import math

from xpnn import layers
from xpnn.backend import CPU, available_bytes, format_bytes, new_rng
from xpnn.layers import ShapeError
from xpnn.layers.base import SHAPES_ONLY
from xpnn.nets.config import ConfigError, check_keys, check_number, closest
from xpnn.nets.network import Network

LAYER_TYPES = {cls.__name__: cls for cls in [
    layers.ConvLayer, layers.MaxPoolLayer, layers.ReLULayer, layers.LeakyReLULayer,
    layers.FlattenLayer, layers.LinearLayer, layers.ResNetBlock]}
ACTIVATIONS = {"ReLULayer": layers.ReLULayer, "LeakyReLULayer": layers.LeakyReLULayer}
MODEL_KEYS = {"name", "input_shape", "num_classes", "layers"}
DEFAULT_NUM_CLASSES = 10


def _layer_arguments(cls):
    """Names the config may give to `cls`'s constructor (`build` supplies rng and dtype)."""
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {name for name, param in inspect.signature(cls.__init__).parameters.items()
            if param.kind in named and name not in ("self", "rng", "dtype")}


def _parse_item(index, item):
    """Return (class, arguments) for one entry of ``model.layers``."""
    where = f"model.layers[{index}]"
    if isinstance(item, str):
        type_name, arguments = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        type_name, arguments = next(iter(item.items()))
        arguments = {} if arguments is None else arguments
    else:
        raise ConfigError(f"{where} must be a layer name or {{LayerName: {{arguments}}}}, "
                          f"got {item!r}")
    if type_name not in LAYER_TYPES:
        raise ConfigError(f"{where}: unknown layer {type_name!r}{closest(type_name, LAYER_TYPES)}; "
                          f"known layers: {', '.join(LAYER_TYPES)}")
    cls = LAYER_TYPES[type_name]
    allowed = _layer_arguments(cls)
    if arguments and not allowed:
        raise ConfigError(f"{where}: {type_name} takes no arguments, got {arguments!r}; "
                          f"write it as a plain '- {type_name}'")
    check_keys(f"{where} {type_name}", arguments, allowed)
    arguments = dict(arguments)
    if "activation" in arguments:
        name = arguments["activation"]
        if name not in ACTIVATIONS:
            raise ConfigError(f"{where} {type_name}: unknown activation {name!r}"
                              f"{closest(name, ACTIVATIONS)}; expected one of {list(ACTIVATIONS)}")
        arguments["activation"] = ACTIVATIONS[name]
    return cls, arguments


def _parameter_count(cls, arguments):
    """Parameters a `cls` layer made with `arguments` would hold; 0 where the arguments are not
    positive integers (the layer's constructor then says what is wrong with them)."""
    try:
        shapes = cls.parameter_shapes(**arguments)
    except TypeError:
        return 0
    dims = [dim for shape in shapes.values() for dim in shape]
    if not all(isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 for dim in dims):
        return 0
    return sum(math.prod(shape) for shape in shapes.values())


def _check_parameters_fit(parsed, dtype):
    """Raise `ConfigError`, naming the largest layer, unless the weights fit in host memory
    (where they are drawn, the largest layer's as float64 first)."""
    counts = [_parameter_count(cls, arguments) for cls, arguments in parsed]
    total = sum(counts)
    largest = max(range(len(counts)), key=counts.__getitem__)
    itemsize = CPU.xp.dtype(dtype).itemsize
    needed = total * itemsize + counts[largest] * 8
    available = available_bytes(CPU)
    if needed > available:
        raise ConfigError(
            f"model.layers[{largest}] {parsed[largest][0].__name__}: the network would hold "
            f"{total:,} parameters, {counts[largest]:,} of them in this layer, which take "
            f"{format_bytes(total * itemsize)} as {dtype} (and {format_bytes(needed)} to draw); "
            f"this machine has {format_bytes(available)} of memory available: make the layer "
            f"smaller")


def build(model_config, seed=0, dtype="float32"):
    """Return the `Network` that `model_config` describes, weights drawn from `seed`.

    Raises `ConfigError` naming the entry at fault: an unknown layer or argument (with the
    closest valid name), a bad value, or two layers whose shapes do not chain.
    """
    stack, input_shape = _layers(model_config, new_rng(seed), dtype)
    return Network(model_config["name"], stack, input_shape=input_shape)


def check(model_config):
    """Raise what `build` raises for `model_config`, without drawing any weight (its layers are
    made for their shapes only; their sizes come from `parameter_shapes`)."""
    _layers(model_config, SHAPES_ONLY, "float32")


def _layers(model_config, rng, dtype):
    """(layers, input shape) of `model_config`, checked, made with `rng` (or `SHAPES_ONLY`)."""
    check_keys("model", model_config, MODEL_KEYS, required=("name", "input_shape", "layers"))
    name = model_config["name"]
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"model.name must be a non-empty string (the network's printed name, "
                          f"e.g. MNISTResNetwork), got {name!r}")
    input_shape = model_config["input_shape"]
    if not (isinstance(input_shape, list) and len(input_shape) in (1, 3)):
        raise ConfigError(f"model.input_shape must be [channels, height, width] or [features], "
                          f"got {input_shape!r}")
    input_shape = tuple(check_number("model.input_shape", v, int, low=1) for v in input_shape)
    num_classes = check_number("model.num_classes",
                               model_config.get("num_classes", DEFAULT_NUM_CLASSES), int, low=2)
    items = model_config["layers"]
    if not isinstance(items, list) or not items:
        raise ConfigError("model.layers must be a non-empty list of layers")

    parsed = [_parse_item(index, item) for index, item in enumerate(items)]
    _check_parameters_fit(parsed, dtype)
    stack, shape = [], (1, *input_shape)
    for index, (cls, arguments) in enumerate(parsed):
        if "rng" in inspect.signature(cls.__init__).parameters:
            arguments.update(rng=rng, dtype=dtype)
        try:
            layer = cls(**arguments)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"model.layers[{index}] {cls.__name__}: {error}") from None
        try:
            shape = layer.output_shape(shape)
        except ShapeError as error:
            raise ConfigError(f"model.layers[{index}] {cls.__name__} cannot take the output of "
                              f"the layer before it, of shape {shape}: {error}") from None
        stack.append(layer)
    if shape != (1, num_classes):
        raise ConfigError(f"the last layer gives outputs of shape {shape[1:]} per image, but "
                          f"the network must give {num_classes} class scores ((N, {num_classes}))")
    return stack, input_shape
