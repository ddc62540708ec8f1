"""`nets.model_section`: the config that describes a built network, the inverse of `build`."""
import pytest

from xpnn import layers, nets
from xpnn.configs import shipped
from xpnn.nets import ConfigError
from xpnn.training import load_config


@pytest.mark.parametrize("name", sorted(shipped()))
def test_every_shipped_networks_section_is_its_configs(name):
    model = load_config(name)["model"]
    assert nets.model_section(nets.build(model, seed=1)) == model


def test_a_hand_built_network_is_described_with_its_settings_and_classes():
    network = nets.Network("Mine", [
        layers.ConvLayer(1, 3, 3, stride=2), layers.LeakyReLULayer(0.3), layers.FlattenLayer(),
        layers.LinearLayer(3 * 14 * 14, 12)], input_shape=(1, 28, 28))
    section = nets.model_section(network)
    assert section == {"name": "Mine", "input_shape": [1, 28, 28], "num_classes": 12, "layers": [
        {"ConvLayer": {"in_channels": 1, "out_channels": 3, "kernel_size": 3, "stride": 2}},
        {"LeakyReLULayer": {"slope": 0.3}}, "FlattenLayer",
        {"LinearLayer": {"in_features": 588, "out_features": 12}}]}
    assert repr(nets.build(section)) == repr(network)


def test_a_network_without_input_shape_takes_the_one_given_or_is_refused():
    network = nets.Network("NoShape", [layers.FlattenLayer(), layers.LinearLayer(16, 2)])
    assert nets.model_section(network, input_shape=(1, 4, 4))["input_shape"] == [1, 4, 4]
    with pytest.raises(ConfigError, match="input_shape=") as raised:
        nets.model_section(network)
    assert "\n" not in str(raised.value)


class Doubled(layers.ReLULayer):
    """A layer of the user's own."""


@pytest.mark.parametrize("network, text", [
    (nets.Network("Own", [layers.FlattenLayer(), Doubled(), layers.LinearLayer(4, 2)],
                  input_shape=(4,)), r"layers\[1\] Doubled is a subclass of ReLULayer"),
    (nets.Network("Add", [layers.AddLayer(), layers.LinearLayer(4, 2)], input_shape=(4,)),
     r"layers\[0\] AddLayer is not a layer it names"),
    (nets.Network("Nested", [layers.SequentialLayer([layers.LinearLayer(4, 2)])],
                  input_shape=(4,)), r"layers\[0\] SequentialLayer is not"),
    (nets.Network("Shapes", [layers.LinearLayer(5, 2)], input_shape=(4,)),
     r"cannot take inputs of shape \(4,\)"),
    (nets.Network("NotClasses", [layers.LinearLayer(4, 1)], input_shape=(4,)),
     "model.num_classes must be >= 2"),
])
def test_a_network_no_config_describes_is_refused_naming_the_layer(network, text):
    with pytest.raises(ConfigError, match=text) as raised:
        nets.model_section(network)
    assert "\n" not in str(raised.value)


def test_a_layer_changed_after_it_was_made_is_refused():
    linear = layers.LinearLayer(4, 2)
    linear.weight.data = linear.weight.data[:3]  # parameters that its settings do not make
    linear.weight.grad = linear.weight.grad[:3]
    with pytest.raises(ConfigError, match=r"layers\[0\] LinearLayer differs .*parameters"):
        nets.model_section(nets.Network("Cut", [linear], input_shape=(4,)))
