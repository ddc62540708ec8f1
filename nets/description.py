"""The config that describes a built network, which its run folder keeps to rebuild it:
`model_section(net)`, the inverse of `build` (for layers of `LAYER_TYPES` only)."""
import inspect

from xpnn.layers import ResNetBlock, SequentialLayer, SoftmaxCrossEntropyLossLayer
from xpnn.layers.base import SHAPES_ONLY
from xpnn.nets.builder import (ACTIVATIONS, DEFAULT_NUM_CLASSES, LAYER_TYPES, _layer_arguments,
                               check)
from xpnn.nets.config import ConfigError
from xpnn.nets.network import Network

PLAIN_VALUES = (bool, int, float, str, tuple, type(None))  # the settings compared, not arrays


class NoConfigError(ConfigError):
    """A network holds a layer (or loss layer) that no config entry builds."""


def model_section(net, input_shape=None):
    """The model section of a config that `build` turns into a network of `net`'s architecture
    (not its loss layer: see `loss_settings`); `input_shape` is used where `net.input_shape` is
    None.

    Raises `NoConfigError` naming the first layer no config can describe (a type outside
    `LAYER_TYPES`, a subclass, or settings or parameter shapes its config entry does not build),
    `ConfigError` for shapes that do not chain or no input_shape, `TypeError` for a non-`Network`.
    """
    if not isinstance(net, Network):
        raise TypeError(f"model_section describes a nets.Network, got {type(net).__name__}")
    shape = net.input_shape if net.input_shape is not None else input_shape
    if shape is None:
        raise ConfigError(f"{net.name} has no input_shape, which a config must give: build it "
                          f"as Network(name, layers, input_shape=(channels, height, width))")
    if type(net.layers) is not SequentialLayer:
        raise NoConfigError(f"{net.name}'s layers are a {type(net.layers).__name__}, which no "
                            f"config describes: give Network a list of layers")
    items = [_item(index, layer) for index, layer in enumerate(net.layers)]
    for index, layer in enumerate(net.layers):
        _check_rebuilt(index, layer, items[index])
    section = {"name": net.name, "input_shape": [int(size) for size in shape],
               "num_classes": DEFAULT_NUM_CLASSES, "layers": items}
    try:
        output = net.layers.output_shape((1, *section["input_shape"]))
    except ValueError as error:
        raise ConfigError(f"{net.name} cannot take inputs of shape {tuple(shape)}: "
                          f"{error}") from None
    if len(output) == 2:
        section["num_classes"] = int(output[1])
    check(section)  # its name, shapes and classes, as a config's are checked
    return section


def loss_settings(net):
    """{train key: value} the config needs for `net`'s loss layer (its label smoothing), or
    `NoConfigError` for a loss layer no config can make."""
    loss = net.loss_layer
    if type(loss) is not SoftmaxCrossEntropyLossLayer:
        raise NoConfigError(f"{net.name}'s loss layer is a {type(loss).__name__}; training "
                            f"configs use SoftmaxCrossEntropyLossLayer (with "
                            f"train.label_smoothing) only")
    return {"label_smoothing": float(loss.label_smoothing)}


def _item(index, layer):
    """The `model.layers` entry that builds a layer like `layer`: a name, or {name: arguments}
    holding the arguments that differ from the constructor's defaults."""
    cls = type(layer)
    name = cls.__name__
    if LAYER_TYPES.get(name) is not cls:
        base = next((base.__name__ for base in cls.__mro__[1:] if base in LAYER_TYPES.values()),
                    None)
        kind = f"a subclass of {base}" if base else "not a layer it names"
        raise NoConfigError(f"layers[{index}] {name} is {kind}: a config names only "
                            f"{', '.join(LAYER_TYPES)}")
    if cls is ResNetBlock:
        first = layer.conv_layers[0]
        given = {"channels": first.out_channels, "kernel_size": first.kernel_size,
                 "activation": type(layer.relu2).__name__}
    else:
        given = {key: getattr(layer, key) for key in _layer_arguments(cls)
                 if hasattr(layer, key)}
    defaults = {key: parameter.default  # in the constructor's order; an activation's: its name
                for key, parameter in inspect.signature(cls.__init__).parameters.items()}
    arguments = {key: given[key] for key, default in defaults.items() if key in given
                 and (default is inspect.Parameter.empty
                      or getattr(default, "__name__", default) != given[key])}
    return {name: arguments} if arguments else name


def _check_rebuilt(index, layer, item):
    """Raise `ConfigError` unless `item` builds a layer of `layer`'s structure and settings."""
    name, arguments = (item, {}) if isinstance(item, str) else next(iter(item.items()))
    cls = LAYER_TYPES[name]
    made = dict(arguments)
    if "activation" in made:
        made["activation"] = ACTIVATIONS.get(made["activation"])
        if made["activation"] is None:
            raise NoConfigError(f"layers[{index}] {name}: its activation is a "
                                f"{arguments['activation']}, which a config cannot give (one of "
                                f"{', '.join(ACTIVATIONS)})")
    if "rng" in inspect.signature(cls.__init__).parameters:
        made["rng"] = SHAPES_ONLY
    try:
        rebuilt = cls(**made)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"layers[{index}] {name}: {error}") from None
    difference = _difference(layer, rebuilt, "")
    if difference is None:
        expected = cls.parameter_shapes(**arguments)
        found = {key: tuple(parameter.shape) for key, parameter in layer.named_parameters()}
        if found != {key: tuple(shape) for key, shape in expected.items()}:
            difference = f"its parameters {found} (its config entry {item!r} makes {expected})"
    if difference is not None:
        raise NoConfigError(f"layers[{index}] {name} differs from what its config entry {item!r} "
                            f"builds: {difference}; a run folder could not rebuild it")


def _difference(layer, rebuilt, path):
    """What first differs between `layer` and `rebuilt` (type, setting, sub-layer), or None."""
    where = path or "the layer"
    if type(layer) is not type(rebuilt):
        return f"{where} is a {type(layer).__name__}, not a {type(rebuilt).__name__}"
    prefix = path + "." if path else ""
    for key, value in vars(rebuilt).items():
        if (not key.startswith("_") and isinstance(value, PLAIN_VALUES)
                and getattr(layer, key, None) != value):
            return f"{prefix}{key} is {getattr(layer, key, None)!r}, not {value!r}"
    mine, theirs = dict(layer.named_children()), dict(rebuilt.named_children())
    if list(mine) != list(theirs):
        return f"{where} holds sub-layers {list(mine)}, not {list(theirs)}"
    found = (_difference(child, theirs[key], prefix + key) for key, child in mine.items())
    return next((difference for difference in found if difference is not None), None)

