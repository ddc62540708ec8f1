"""The networks of OUR config files, built in PyTorch: the reference our CPU speed is judged by.

    torch = import_torch()                       # clear error if PyTorch is missing
    net = build_torch_net(config["model"])       # nn.Sequential, float32
    copy_weights(our_net, net)                   # same starting weights as nets.build(...)
    runner = TorchTrainingStep(config, batch_size=100)
    runner.timed_steps(10)                       # ms per full training step

Layer mapping: ConvLayer -> nn.Conv2d(padding=(k - 1) // 2), MaxPoolLayer -> nn.MaxPool2d,
ReLULayer / LeakyReLULayer(slope) -> nn.ReLU / nn.LeakyReLU, FlattenLayer -> nn.Flatten,
LinearLayer -> nn.Linear (our weight is (in, out), PyTorch's (out, in)), ResNetBlock ->
`TorchResNetBlock`: act(conv2(act(conv1(x))) + x). Loss: nn.CrossEntropyLoss (batch mean).
Optimizer: torch.optim.SGD with the config's lr, momentum and weight_decay, which is the same
update as ours (v = m v + g + wd w; w -= lr v).

PyTorch is optional (``pip install torch==2.13.0``) and never imported by the library itself.
"""
from xpnn.tools.bench import BENCH_LR, make_batch, time_steps

TORCH_INSTALL_HINT = "pip install torch==2.13.0"
THREADS = 2


class TorchMissingError(ImportError):
    """PyTorch is not installed; the message says how to install it."""


def import_torch(threads=THREADS):
    """Import PyTorch limited to `threads` intra-op threads; raise `TorchMissingError` if absent."""
    try:
        import torch
    except ImportError as error:
        raise TorchMissingError(
            f"PyTorch is needed for the reference side of the benchmark but is not installed "
            f"({error}); install it with `{TORCH_INSTALL_HINT}`, or run our side alone with "
            f"--ours-only") from None
    torch.set_num_threads(threads)
    return torch


def _parse_item(item):
    """(type name, arguments) of one ``model.layers`` entry."""
    if isinstance(item, str):
        return item, {}
    (name, arguments), = item.items()
    return name, dict(arguments or {})


def _activation(torch, name, arguments=None):
    arguments = arguments or {}
    if name == "ReLULayer":
        return torch.nn.ReLU()
    if name == "LeakyReLULayer":
        return torch.nn.LeakyReLU(arguments.get("slope", 0.01))
    raise ValueError(f"no PyTorch counterpart for activation {name!r}")


def _conv(torch, in_channels, out_channels, kernel_size, stride=1):
    return torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                           padding=(kernel_size - 1) // 2)


def _resnet_block_class(torch):
    class TorchResNetBlock(torch.nn.Module):
        """act(conv2(act(conv1(x))) + x), both convs channels -> channels, stride 1."""

        def __init__(self, channels, kernel_size=3, activation="ReLULayer"):
            super().__init__()
            self.conv1 = _conv(torch, channels, channels, kernel_size)
            self.act1 = _activation(torch, activation)
            self.conv2 = _conv(torch, channels, channels, kernel_size)
            self.act2 = _activation(torch, activation)

        def forward(self, x):
            return self.act2(self.conv2(self.act1(self.conv1(x))) + x)

    return TorchResNetBlock


def build_torch_net(model_config, torch=None):
    """An ``nn.Sequential`` (float32, CPU) with one module per entry of ``model.layers``."""
    torch = torch or import_torch()
    nn = torch.nn
    modules = []
    for index, item in enumerate(model_config["layers"]):
        name, arguments = _parse_item(item)
        if name == "ConvLayer":
            modules.append(_conv(torch, **arguments))
        elif name == "MaxPoolLayer":
            kernel = arguments["kernel_size"]
            modules.append(nn.MaxPool2d(kernel, arguments.get("stride", kernel)))
        elif name in ("ReLULayer", "LeakyReLULayer"):
            modules.append(_activation(torch, name, arguments))
        elif name == "FlattenLayer":
            modules.append(nn.Flatten())
        elif name == "LinearLayer":
            modules.append(nn.Linear(arguments["in_features"], arguments["out_features"]))
        elif name == "ResNetBlock":
            modules.append(_resnet_block_class(torch)(**arguments))
        else:
            raise ValueError(f"model.layers[{index}]: no PyTorch counterpart for {name!r}")
    return nn.Sequential(*modules).float()


def copy_weights(our_net, torch_net):
    """Copy our network's parameters into the PyTorch one built from the same config, in place.

    Walks both layer lists side by side; linear weights are transposed ((in, out) -> (out, in)).
    """
    import torch

    from xpnn.backend import CPU

    def assign(module_param, array):  # via the host: our parameters may live on a GPU
        with torch.no_grad():
            module_param.copy_(torch.from_numpy(CPU.to_numpy(array).copy()))

    def copy_layer(ours, theirs):
        kind = type(ours).__name__
        if kind == "ConvLayer":
            assign(theirs.weight, ours.weight.data)
            assign(theirs.bias, ours.bias.data)
        elif kind == "LinearLayer":
            assign(theirs.weight, CPU.to_numpy(ours.weight.data).T)
            assign(theirs.bias, ours.bias.data)
        elif kind == "ResNetBlock":
            convs = [layer for layer in ours.conv_layers if type(layer).__name__ == "ConvLayer"]
            copy_layer(convs[0], theirs.conv1)
            copy_layer(convs[1], theirs.conv2)
        elif any(True for _ in ours.parameters()):
            raise ValueError(f"do not know how to copy the parameters of {kind}")

    if len(our_net.layers) != len(torch_net):
        raise ValueError(f"our network has {len(our_net.layers)} layers, the PyTorch one "
                         f"{len(torch_net)}: were they built from the same config?")
    for ours, theirs in zip(our_net.layers, torch_net):
        copy_layer(ours, theirs)


def make_torch_optimizer(train_config, parameters, torch=None, lr=None):
    """torch.optim.SGD with the ``train`` section's lr (unless `lr` is given), momentum (0 for
    ``sgd``) and weight_decay, as `optim.make_optimizer` reads them; torch.optim.Adam or AdamW
    with its betas, eps and weight_decay for ``adam`` and ``adamw``."""
    from xpnn.optim import DEFAULT_BETAS, DEFAULT_EPS
    torch = torch or import_torch()
    train_config = train_config or {}
    name = train_config.get("optimizer", "momentum_sgd")
    lr = train_config.get("lr", 0.01) if lr is None else lr
    if name in ("adam", "adamw"):
        kind = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return kind(parameters, lr=lr, betas=tuple(train_config.get("betas", DEFAULT_BETAS)),
                    eps=train_config.get("eps", DEFAULT_EPS),
                    weight_decay=train_config.get("weight_decay",
                                                  0.01 if name == "adamw" else 0.0))
    if name not in ("momentum_sgd", "sgd"):
        raise ValueError(f"train.optimizer {name!r} is not known; expected momentum_sgd, sgd, "
                         f"adam or adamw")
    momentum = train_config.get("momentum", 0.9) if name == "momentum_sgd" else 0.0
    return torch.optim.SGD(parameters, lr=lr, momentum=momentum,
                           weight_decay=train_config.get("weight_decay", 0.0))


class TorchTrainingStep:
    """PyTorch's counterpart of `xpnn.tools.bench.StepBench`: the network of `config` with OUR
    initial weights (``nets.build(model, seed)``), its SGD optimizer (learning rate `lr`, as ours)
    and the same fixed batch; `step()` is zero_grad, forward, loss, backward, step."""

    def __init__(self, config, batch_size=100, seed=0, lr=BENCH_LR, threads=THREADS):
        from xpnn import nets

        torch = import_torch(threads)
        self.torch = torch
        self.net = build_torch_net(config["model"], torch)
        copy_weights(nets.build(config["model"], seed=seed), self.net)
        self.optimizer = make_torch_optimizer(config.get("train"), self.net.parameters(), torch, lr)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        images, labels = make_batch(config["model"], batch_size, seed)
        self.images = torch.from_numpy(images).float().div_(255)  # as our step makes them
        self.labels = torch.from_numpy(labels)
        self.batch_size = batch_size
        self.loss = None

    def step(self):
        self.optimizer.zero_grad()
        self.loss = self.loss_fn(self.net(self.images), self.labels)
        self.loss.backward()
        self.optimizer.step()

    def timed_steps(self, count):
        """`count` steps; their wall times in ms (PyTorch's CPU ops are synchronous)."""
        return time_steps(self.step, count)
