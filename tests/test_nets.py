"""Networks built from configs: every config builds, prints as the reference write-up, computes
(N, 10) logits, and bad configs get errors that name the entry and what would be right."""
import copy
from pathlib import Path

import numpy
import pytest
import yaml

from xpnn import layers
from xpnn import nets
from xpnn.nets import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
CONFIG_PATHS = sorted(CONFIG_DIR.glob("*.yaml"))


def model_config(name):
    return yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())["model"]


# The listings of the reference write-up (hw2_short_answers.txt), transcribed line by line. The
# PDF extraction lost most indentation and turned some lines into "- " bullets; those markers are
# dropped here and the indentation restored to the write-up's nesting: four spaces per level.

# Write-up answer 1: two residual blocks on each side of the second pool.
ANSWER_1 = """\
MNISTResNetwork:
    (layers): SequentialLayer:
        (0): ConvLayer: Kernel: (5, 5) In Channels 1 Out Channels 6 Stride 1
        (1): MaxPoolLayer: kernel: 2 stride: 2
        (2): ReLULayer:
        (3): ConvLayer: Kernel: (5, 5) In Channels 6 Out Channels 16 Stride 1
        (4): ResNetBlock:
            (conv_layers): SequentialLayer:
                (0): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
                (1): ReLULayer:
                (2): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
            (add_layer): AddLayer:
            (relu2): ReLULayer:
        (5): ResNetBlock:
            (conv_layers): SequentialLayer:
                (0): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
                (1): ReLULayer:
                (2): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
            (add_layer): AddLayer:
            (relu2): ReLULayer:
        (6): MaxPoolLayer: kernel: 2 stride: 2
        (7): ResNetBlock:
            (conv_layers): SequentialLayer:
                (0): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
                (1): ReLULayer:
                (2): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
            (add_layer): AddLayer:
            (relu2): ReLULayer:
        (8): ResNetBlock:
            (conv_layers): SequentialLayer:
                (0): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
                (1): ReLULayer:
                (2): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
            (add_layer): AddLayer:
            (relu2): ReLULayer:
        (9): ReLULayer:
        (10): FlattenLayer:
        (11): LinearLayer: (784, 120)
        (12): ReLULayer:
        (13): LinearLayer: (120, 84)
        (14): ReLULayer:
        (15): LinearLayer: (84, 10)
    (loss_layer): SoftmaxCrossEntropyLossLayer:
"""

# Write-up answer 2: LeakyReLU everywhere, as printed.
ANSWER_2 = """\
MNISTResNetwork:
    (layers): SequentialLayer:
        (0): ConvLayer: Kernel: (5, 5) In Channels 1 Out Channels 6 Stride 1
        (1): MaxPoolLayer: kernel: 2 stride: 2
        (2): LeakyReLULayer:
        (3): ConvLayer: Kernel: (5, 5) In Channels 6 Out Channels 16 Stride 1
        (4): ResNetBlock:
            (conv_layers): SequentialLayer:
                (0): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
                (1): LeakyReLULayer:
                (2): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
            (add_layer): AddLayer:
            (relu2): LeakyReLULayer:
        (5): ResNetBlock:
            (conv_layers): SequentialLayer:
                (0): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
                (1): LeakyReLULayer:
                (2): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
            (add_layer): AddLayer:
            (relu2): LeakyReLULayer:
        (6): MaxPoolLayer: kernel: 2 stride: 2
        (7): LeakyReLULayer:
        (8): FlattenLayer:
        (9): LinearLayer: (784, 120)
        (10): LeakyReLULayer:
        (11): LinearLayer: (120, 84)
        (12): LeakyReLULayer:
        (13): LinearLayer: (84, 10)
    (loss_layer): SoftmaxCrossEntropyLossLayer:
"""

# Write-up answer 3a: the LeNet-style MNISTNetwork.
ANSWER_3A = """\
MNISTNetwork:
    (layers): SequentialLayer:
        (0): ConvLayer: Kernel: (5, 5) In Channels 1 Out Channels 6 Stride 1
        (1): MaxPoolLayer: kernel: 2 stride: 2
        (2): ReLULayer:
        (3): ConvLayer: Kernel: (5, 5) In Channels 6 Out Channels 16 Stride 1
        (4): MaxPoolLayer: kernel: 2 stride: 2
        (5): ReLULayer:
        (6): FlattenLayer:
        (7): LinearLayer: (784, 120)
        (8): ReLULayer:
        (9): LinearLayer: (120, 84)
        (10): ReLULayer:
        (11): LinearLayer: (84, 10)
    (loss_layer): SoftmaxCrossEntropyLossLayer:
"""

# Write-up answer 3b: three residual blocks.
ANSWER_3B = """\
MNISTResNetwork:
    (layers): SequentialLayer:
        (0): ConvLayer: Kernel: (5, 5) In Channels 1 Out Channels 6 Stride 1
        (1): MaxPoolLayer: kernel: 2 stride: 2
        (2): ReLULayer:
        (3): ConvLayer: Kernel: (5, 5) In Channels 6 Out Channels 16 Stride 1
        (4): ResNetBlock:
            (conv_layers): SequentialLayer:
                (0): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
                (1): ReLULayer:
                (2): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
            (add_layer): AddLayer:
            (relu2): ReLULayer:
        (5): ResNetBlock:
            (conv_layers): SequentialLayer:
                (0): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
                (1): ReLULayer:
                (2): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
            (add_layer): AddLayer:
            (relu2): ReLULayer:
        (6): ResNetBlock:
            (conv_layers): SequentialLayer:
                (0): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
                (1): ReLULayer:
                (2): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
            (add_layer): AddLayer:
            (relu2): ReLULayer:
        (7): MaxPoolLayer: kernel: 2 stride: 2
        (8): ReLULayer:
        (9): FlattenLayer:
        (10): LinearLayer: (784, 120)
        (11): ReLULayer:
        (12): LinearLayer: (120, 84)
        (13): ReLULayer:
        (14): LinearLayer: (84, 10)
    (loss_layer): SoftmaxCrossEntropyLossLayer:
"""

# Write-up answer 3c: a 6-channel block before the second conv, three 16-channel blocks after.
ANSWER_3C = """\
MNISTResNetwork:
    (layers): SequentialLayer:
        (0): ConvLayer: Kernel: (5, 5) In Channels 1 Out Channels 6 Stride 1
        (1): MaxPoolLayer: kernel: 2 stride: 2
        (2): ResNetBlock:
            (conv_layers): SequentialLayer:
                (0): ConvLayer: Kernel: (3, 3) In Channels 6 Out Channels 6 Stride 1
                (1): ReLULayer:
                (2): ConvLayer: Kernel: (3, 3) In Channels 6 Out Channels 6 Stride 1
            (add_layer): AddLayer:
            (relu2): ReLULayer:
        (3): ReLULayer:
        (4): ConvLayer: Kernel: (5, 5) In Channels 6 Out Channels 16 Stride 1
        (5): ResNetBlock:
            (conv_layers): SequentialLayer:
                (0): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
                (1): ReLULayer:
                (2): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
            (add_layer): AddLayer:
            (relu2): ReLULayer:
        (6): ResNetBlock:
            (conv_layers): SequentialLayer:
                (0): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
                (1): ReLULayer:
                (2): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
            (add_layer): AddLayer:
            (relu2): ReLULayer:
        (7): ResNetBlock:
            (conv_layers): SequentialLayer:
                (0): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
                (1): ReLULayer:
                (2): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1
            (add_layer): AddLayer:
            (relu2): ReLULayer:
        (8): MaxPoolLayer: kernel: 2 stride: 2
        (9): ReLULayer:
        (10): FlattenLayer:
        (11): LinearLayer: (784, 120)
        (12): ReLULayer:
        (13): LinearLayer: (120, 84)
        (14): ReLULayer:
        (15): LinearLayer: (84, 10)
    (loss_layer): SoftmaxCrossEntropyLossLayer:
"""

EXPECTED_LISTINGS = {
    "resnet_deep": ANSWER_1,
    "resnet_leaky": ANSWER_2,
    # The default resnet is answer 2's network with ReLU, as its config's comment says.
    "resnet": ANSWER_2.replace("LeakyReLULayer", "ReLULayer"),
    "lenet": ANSWER_3A,
    "resnet_3blocks": ANSWER_3B,
    "resnet_stem": ANSWER_3C,
}


# The recipes: other training of a write-up network, whose model section is that config's.
RECIPE_NETWORKS = {
    "lenet_augment": "lenet",
    "resnet_augment": "resnet",
    "resnet_augment_long": "resnet",
    "fashion_lenet": "lenet",
    "fashion_resnet": "resnet",
}


def test_every_config_has_a_listing():
    assert sorted([*EXPECTED_LISTINGS, *RECIPE_NETWORKS]) == sorted(path.stem for path in CONFIG_PATHS)


@pytest.mark.parametrize("recipe", sorted(RECIPE_NETWORKS))
def test_each_recipe_trains_a_write_up_network(recipe):
    assert model_config(recipe) == model_config(RECIPE_NETWORKS[recipe])


@pytest.mark.parametrize("name", sorted(EXPECTED_LISTINGS))
def test_printed_network_matches_the_write_up_line_by_line(name):
    """The write-up's contract: the same lines, indentation aside."""
    got = [line.strip() for line in repr(nets.build(model_config(name))).splitlines()]
    expected = [line.strip() for line in EXPECTED_LISTINGS[name].splitlines()]
    assert got == expected


@pytest.mark.parametrize("name", sorted(EXPECTED_LISTINGS))
def test_printed_network_nests_four_spaces_per_level(name):
    assert repr(nets.build(model_config(name))).splitlines() == \
        EXPECTED_LISTINGS[name].splitlines()


# -- building and running every config ---------------------------------------------------------------

@pytest.mark.parametrize("path", CONFIG_PATHS, ids=lambda path: path.stem)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_config_builds_and_gives_ten_class_scores(path, dtype):
    config = yaml.safe_load(path.read_text())["model"]
    net = nets.build(config, seed=0, dtype=dtype)
    assert isinstance(net, nets.Network) and isinstance(net, layers.Layer)
    assert net.name == config["name"] and net.input_shape == (1, 28, 28)
    assert len(net.layers) == len(config["layers"])
    assert isinstance(net.loss_layer, layers.SoftmaxCrossEntropyLossLayer)
    assert all(param.dtype == dtype for param in net.parameters())
    assert net.output_shape((5, 1, 28, 28)) == (5, 10)

    rng = numpy.random.default_rng(0)
    for batch in (1, 3):
        images = rng.random((batch, 1, 28, 28)).astype(dtype)
        logits = net.forward(images)
        assert logits.shape == (batch, 10) and logits.dtype == dtype
        assert numpy.isfinite(logits).all()

    labels = rng.integers(0, 10, 3)
    net.zero_grad()
    loss, logits = net.forward_loss(images, labels)
    assert loss.shape == () and numpy.isfinite(float(loss)) and logits.shape == (3, 10)
    assert net.backward() is None  # the first layer skips the unneeded image gradient
    assert all(numpy.isfinite(param.grad).all() for param in net.parameters())
    assert all(param.grad.any() for name, param in net.named_parameters()
               if name.endswith("weight"))


def test_backward_out_of_order_is_named_not_an_attribute_error():
    net = nets.build(model_config("lenet"), seed=0)
    images, labels = numpy.zeros((2, 1, 28, 28), "float32"), numpy.array([3, 4])
    expected = r"MNISTNetwork.backward\(\) follows forward_loss\(images, labels\)"
    with pytest.raises(RuntimeError, match=expected):  # before any forward_loss
        net.backward()
    net.forward_loss(images, labels)
    net.forward(images)  # the layers now hold this forward's values, not the loss's
    with pytest.raises(RuntimeError, match=expected):
        net.backward()
    net.forward_loss(images, labels)
    net.backward()
    with pytest.raises(RuntimeError, match=expected):  # each loss is used once
        net.backward()


@pytest.mark.parametrize("dtype", ["uint8", "int64", "bool"])
def test_a_network_refuses_integer_images_in_one_line(dtype):
    net = nets.build(model_config("lenet"), seed=0)
    images = numpy.zeros((2, 1, 28, 28), dtype)
    expected = (rf"MNISTNetwork takes floating-point images \(float32 on the \[0, 1\] scale, as it "
                rf"was trained\), got {dtype}; divide 0-255 images by 255")
    for call in (lambda: net.forward(images), lambda: net.forward_loss(images, numpy.array([1, 2]))):
        with pytest.raises(ValueError, match=expected):
            call()


def test_parameter_count_and_names_of_lenet():
    net = nets.build(model_config("lenet"))
    assert net.num_parameters() == (6 * 25 + 6) + (16 * 6 * 25 + 16) + (784 * 120 + 120) + \
        (120 * 84 + 84) + (84 * 10 + 10)
    assert list(net.state_dict()) == [
        "layers.0.weight", "layers.0.bias", "layers.3.weight", "layers.3.bias",
        "layers.7.weight", "layers.7.bias", "layers.9.weight", "layers.9.bias",
        "layers.11.weight", "layers.11.bias"]


def test_same_seed_same_weights_and_other_seed_other_weights():
    config = model_config("resnet")
    first, again, other = (nets.build(config, seed=seed).state_dict() for seed in (3, 3, 4))
    assert all((first[name] == again[name]).all() for name in first)
    assert all((first[name] != other[name]).any() for name in first if name.endswith("weight"))


def test_float32_and_float64_builds_share_weights():
    config = model_config("lenet")
    single, double = nets.build(config, dtype="float32"), nets.build(config, dtype="float64")
    for (name, a), (_, b) in zip(single.named_parameters(), double.named_parameters()):
        numpy.testing.assert_array_equal(a.data, b.data.astype("float32"), err_msg=name)


def test_build_does_not_change_the_config():
    config = model_config("resnet_leaky")
    before = copy.deepcopy(config)
    nets.build(config)
    assert config == before


def test_input_shape_of_features_and_other_class_counts():
    config = {"name": "MLP", "input_shape": [12], "num_classes": 3,
              "layers": [{"LinearLayer": {"in_features": 12, "out_features": 3}}]}
    net = nets.build(config)
    assert net.forward(numpy.ones((4, 12), dtype="float32")).shape == (4, 3)


# -- errors ----------------------------------------------------------------------------------------

def with_layer(name, index, item):
    """A copy of config `name` with its layer `index` replaced by `item`."""
    config = copy.deepcopy(model_config(name))
    config["layers"][index] = item
    return config


@pytest.mark.parametrize("config,texts", [
    (with_layer("lenet", 7, {"LinearLayer": {"in_features": 100, "out_features": 120}}),
     ["model.layers[7]", "LinearLayer", "(1, 784)", "(N, 100)"]),
    (with_layer("lenet", 3, {"ConvLayer": {"in_channels": 5, "out_channels": 16,
                                          "kernel_size": 5}}),
     ["model.layers[3]", "ConvLayer", "(1, 6, 14, 14)", "(N, 5, H, W)"]),
    (with_layer("resnet", 4, {"ResNetBlock": {"channels": 6}}),
     ["model.layers[4]", "ResNetBlock", "(1, 16, 14, 14)", "6"]),
    (with_layer("lenet", 6, {"MaxPoolLayer": {"kernel_size": 9}}),
     ["model.layers[6]", "MaxPoolLayer", "(1, 16, 7, 7)"]),
    (with_layer("lenet", 11, {"LinearLayer": {"in_features": 84, "out_features": 9}}),
     ["(9,)", "10 class scores"]),
], ids=["linear-in-features", "conv-in-channels", "block-channels", "pool-too-large",
        "wrong-class-count"])
def test_layers_that_do_not_chain_name_the_layer_and_both_shapes(config, texts):
    with pytest.raises(ConfigError) as error:
        nets.build(config)
    for text in texts:
        assert text in str(error.value), str(error.value)


@pytest.mark.parametrize("config,texts", [
    (with_layer("lenet", 0, {"ConvLayr": {"in_channels": 1, "out_channels": 6, "kernel_size": 5}}),
     ["model.layers[0]", "unknown layer 'ConvLayr'", "did you mean 'ConvLayer'"]),
    (with_layer("lenet", 2, "ReluLayer"), ["model.layers[2]", "did you mean 'ReLULayer'"]),
    (with_layer("lenet", 0, {"ConvLayer": {"in_channels": 1, "out_channel": 6, "kernel_size": 5}}),
     ["model.layers[0]", "'out_channel'", "did you mean 'out_channels'"]),
    (with_layer("lenet", 1, {"MaxPoolLayer": {"kernel_size": 2, "strides": 2}}),
     ["model.layers[1]", "did you mean 'stride'"]),
    (with_layer("resnet", 4, {"ResNetBlock": {"channels": 16, "activation": "LeakyRelu"}}),
     ["model.layers[4]", "did you mean 'LeakyReLULayer'"]),
    ({**model_config("lenet"), "layer": []}, ["'layer'", "did you mean 'layers'"]),
], ids=["layer-name", "layer-name-case", "argument", "pool-argument", "activation", "model-key"])
def test_misspelt_names_get_a_did_you_mean(config, texts):
    with pytest.raises(ConfigError) as error:
        nets.build(config)
    for text in texts:
        assert text in str(error.value), str(error.value)


@pytest.mark.parametrize("config,text", [
    (with_layer("lenet", 0, {"ConvLayer": {"in_channels": 1, "out_channels": 6,
                                          "kernel_size": 0}}), "model.layers[0] ConvLayer"),
    (with_layer("lenet", 0, {"ConvLayer": {"in_channels": 1, "out_channels": 6}}),
     "model.layers[0] ConvLayer"),
    (with_layer("lenet", 0, ["ConvLayer"]), "model.layers[0]"),
    ({**model_config("lenet"), "layers": []}, "model.layers"),
    ({**model_config("lenet"), "input_shape": [28, 28]}, "model.input_shape"),
    ({**model_config("lenet"), "num_classes": 1}, "model.num_classes"),
    ({key: value for key, value in model_config("lenet").items() if key != "name"}, "'name'"),
], ids=["bad-value", "missing-argument", "not-a-layer", "no-layers", "input-shape",
        "one-class", "missing-name"])
def test_bad_values_name_the_entry(config, text):
    with pytest.raises(ConfigError) as error:
        nets.build(config)
    assert text in str(error.value), str(error.value)
    assert issubclass(ConfigError, ValueError)


def test_arguments_to_an_argument_less_layer_are_reported_plainly():
    with pytest.raises(ConfigError) as error:
        nets.build(with_layer("lenet", 2, {"ReLULayer": {"slope": 0.1}}))
    assert "args" not in str(error.value), str(error.value)


def test_a_residual_block_with_an_even_kernel_is_a_config_error():
    config = {"name": "N", "input_shape": [2, 6, 6], "num_classes": 2,
              "layers": [{"ResNetBlock": {"channels": 2, "kernel_size": 2}}, "FlattenLayer",
                         {"LinearLayer": {"in_features": 32, "out_features": 2}}]}
    with pytest.raises(ConfigError, match="kernel"):
        nets.build(config)
