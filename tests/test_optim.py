"""Optimizers against hand-computed updates, their packed parameter buffers, state round trips,
learning-rate schedules and argument checks."""
import math
from pathlib import Path

import numpy
import pytest
import yaml

from xpnn import layers
from xpnn import nets
from xpnn.backend import CPU, device_of
from xpnn.layers import Parameter
from xpnn.optim import (AdamOptimizer, AdamWOptimizer, MomentumSGDOptimizer, PackedParameters,
                        Schedule, SGDOptimizer, make_optimizer)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
STEPS = 3


def make_parameters(dtype="float64", seed=0, device=CPU):
    """Three parameters of different shapes with known values, on `device`."""
    rng = numpy.random.default_rng(seed)
    return [Parameter(device.send(rng.standard_normal(shape).astype(dtype)))
            for shape in [(2, 3), (4,), (1, 2, 2)]]


def gradients(step, params, seed=100):
    """The fixed host gradients of `step`, one per parameter."""
    rng = numpy.random.default_rng(seed + step)
    return [rng.standard_normal(p.shape) for p in params]


def set_gradients(params, grads):
    for param, grad in zip(params, grads):
        param.grad[...] = device_of(param.grad).send(grad)  # in place: the optimizer's buffer


def tolerance(dtype):
    return dict(rtol=1e-6, atol=1e-6) if dtype == "float32" else dict(rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01], ids=["no-decay", "decay"])
def test_sgd_matches_hand_computed_updates(weight_decay, dtype, device):
    params = make_parameters(dtype, device=device)
    expected = [device.to_numpy(p.data).astype(numpy.float64) for p in params]
    optimizer = SGDOptimizer(params, lr=0.1, weight_decay=weight_decay)
    for step in range(STEPS):
        optimizer.zero_grad()
        grads = gradients(step, params)
        set_gradients(params, grads)
        optimizer.step()
        expected = [w - 0.1 * (g + weight_decay * w) for w, g in zip(expected, grads)]
        for param, want in zip(params, expected):
            numpy.testing.assert_allclose(device.to_numpy(param.data), want, **tolerance(dtype))
            assert param.data.dtype == dtype
    assert optimizer.steps == STEPS


@pytest.mark.parametrize("momentum,weight_decay", [(0.9, 0.0), (0.5, 5e-4), (0.0, 0.1)],
                         ids=["m0.9", "m0.5-decay", "m0-decay"])
def test_momentum_sgd_matches_hand_computed_updates(momentum, weight_decay, dtype, device):
    params = make_parameters(dtype, device=device)
    expected = [device.to_numpy(p.data).astype(numpy.float64) for p in params]
    velocity = [numpy.zeros_like(w) for w in expected]
    optimizer = MomentumSGDOptimizer(params, lr=0.05, momentum=momentum, weight_decay=weight_decay)
    for step in range(STEPS):
        optimizer.zero_grad()
        grads = gradients(step, params)
        set_gradients(params, grads)
        optimizer.step()
        velocity = [momentum * v + g + weight_decay * w for v, g, w in zip(velocity, grads, expected)]
        expected = [w - 0.05 * v for w, v in zip(expected, velocity)]
        for param, want in zip(params, expected):
            numpy.testing.assert_allclose(device.to_numpy(param.data), want, **tolerance(dtype))


# -- Adam and AdamW ---------------------------------------------------------------------------------

ADAM_STEPS = 20
ADAM_CASES = {  # (optimizer class, keyword arguments)
    "adam": (AdamOptimizer, dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)),
    "adam-decay": (AdamOptimizer, dict(betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    "adamw": (AdamWOptimizer, dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)),
    "adamw-decay": (AdamWOptimizer, dict(betas=(0.8, 0.99), eps=1e-3, weight_decay=0.5)),
}


def adam_rate(step):
    """A learning rate that changes every step, as a schedule's does."""
    return 0.02 * (1 - step / (2 * ADAM_STEPS))


def documented_adam(weights, grads_of_step, betas, eps, weight_decay, decoupled):
    """PyTorch's documented algorithm for torch.optim.Adam (decoupled=False) and AdamW (True),
    transcribed in float64 NumPy: the weights after each of ADAM_STEPS steps."""
    beta1, beta2 = betas
    weights = [w.astype(numpy.float64) for w in weights]
    m = [numpy.zeros_like(w) for w in weights]
    v = [numpy.zeros_like(w) for w in weights]
    trajectory = []
    for step in range(ADAM_STEPS):
        t, lr = step + 1, adam_rate(step)
        for i, (w, g) in enumerate(zip(weights, grads_of_step(step))):
            if decoupled:
                w = w - lr * weight_decay * w
            elif weight_decay:
                g = g + weight_decay * w
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat, v_hat = m[i] / (1 - beta1 ** t), v[i] / (1 - beta2 ** t)
            weights[i] = w - lr * m_hat / (numpy.sqrt(v_hat) + eps)
        trajectory.append([w.copy() for w in weights])
    return trajectory


@pytest.mark.parametrize("case", sorted(ADAM_CASES))
def test_adam_matches_the_documented_algorithm_over_20_steps(case, dtype, device):
    kind, options = ADAM_CASES[case]
    params = make_parameters(dtype, device=device)
    start = [device.to_numpy(p.data) for p in params]
    expected = documented_adam(start, lambda step: gradients(step, params), options["betas"],
                               options["eps"], options["weight_decay"], kind is AdamWOptimizer)
    optimizer = kind(params, lr=adam_rate(0), **options)
    for step in range(ADAM_STEPS):
        optimizer.lr = adam_rate(step)
        optimizer.zero_grad()
        set_gradients(params, gradients(step, params))
        optimizer.step()
        for param, want in zip(params, expected[step]):
            got = device.to_numpy(param.data)
            assert got.dtype == dtype
            numpy.testing.assert_allclose(
                got, want, **(dict(rtol=1e-12, atol=1e-13) if dtype == "float64"
                              else dict(rtol=1e-5, atol=2e-6)))
    assert optimizer.steps == ADAM_STEPS


@pytest.mark.parametrize("case", sorted(ADAM_CASES))
def test_adam_and_the_documented_algorithm_match_torch_in_float64(case):
    """The transcription above, and our optimizers, against torch.optim.Adam / AdamW."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (not a dev extra: "
                                "the transcription above stands in for it)")
    kind, options = ADAM_CASES[case]
    params = make_parameters("float64")
    start = [p.data.copy() for p in params]
    expected = documented_adam(start, lambda step: gradients(step, params), options["betas"],
                               options["eps"], options["weight_decay"], kind is AdamWOptimizer)
    tensors = [torch.tensor(w, requires_grad=True) for w in start]
    theirs = (torch.optim.AdamW if kind is AdamWOptimizer else torch.optim.Adam)(
        tensors, lr=adam_rate(0), foreach=False, **options)
    ours = kind(params, lr=adam_rate(0), **options)
    for step in range(ADAM_STEPS):
        grads = gradients(step, params)
        for tensor, grad in zip(tensors, grads):
            tensor.grad = torch.tensor(grad)
        theirs.param_groups[0]["lr"] = ours.lr = adam_rate(step)
        theirs.step()
        ours.zero_grad()
        set_gradients(params, grads)
        ours.step()
        for tensor, param, want in zip(tensors, params, expected[step]):
            numpy.testing.assert_allclose(want, tensor.detach().numpy(), rtol=1e-12, atol=1e-14)
            numpy.testing.assert_allclose(param.data, tensor.detach().numpy(), rtol=1e-12,
                                          atol=1e-14)


def test_adam_state_round_trips_and_refuses_another_optimizers_state():
    params = make_parameters()
    optimizer = AdamWOptimizer(params, lr=0.01)
    set_gradients(params, gradients(0, params))
    optimizer.step()
    state = optimizer.state_dict()
    assert set(state) == {"lr", "steps", "exp_avg", "exp_avg_sq"} and state["steps"] == 1
    assert state["exp_avg"].any() and state["exp_avg_sq"].any()
    state["exp_avg"][...] = 0  # a host copy
    assert optimizer.exp_avg.any()
    with pytest.raises(ValueError, match="exp_avg_sq of shape"):
        optimizer.load_state_dict({**state, "exp_avg_sq": numpy.zeros(3)})
    momentum_state = MomentumSGDOptimizer(make_parameters(), lr=0.1).state_dict()
    with pytest.raises(ValueError, match="lacks exp_avg"):
        optimizer.load_state_dict(momentum_state)


@pytest.mark.parametrize("arguments, message", [
    (dict(betas=(0.9,)), "betas must be two numbers in"), (dict(betas=(0.9, 1.0)), "betas"),
    (dict(betas=(-0.1, 0.9)), "betas"), (dict(betas=(0.9, float("nan"))), "betas"),
    (dict(eps=0.0), "eps must be a finite number > 0"), (dict(eps=float("inf")), "eps"),
    (dict(weight_decay=-1.0), "weight_decay"),
], ids=["one-beta", "beta-1", "negative-beta", "nan-beta", "eps-0", "eps-inf", "negative-decay"])
def test_bad_adam_hyperparameters_raise_value_error(arguments, message):
    for kind in (AdamOptimizer, AdamWOptimizer):
        with pytest.raises(ValueError, match=message):
            kind(make_parameters(), lr=0.01, **arguments)


def test_the_factory_makes_adam_and_adamw_from_a_train_section():
    section = {"optimizer": "adam", "lr": 0.001, "betas": [0.8, 0.9], "eps": 1e-6,
               "weight_decay": 0.1}
    adam = make_optimizer(section, make_parameters())
    assert type(adam) is AdamOptimizer and adam.betas == (0.8, 0.9) and adam.eps == 1e-6
    assert adam.weight_decay == 0.1 and adam.lr == 0.001
    adamw = make_optimizer({"optimizer": "adamw", "lr": 0.001}, make_parameters())
    assert type(adamw) is AdamWOptimizer and adamw.weight_decay == 0.01  # PyTorch's default


def test_changing_lr_takes_effect_on_the_next_step():
    params = make_parameters()
    start = params[0].data.copy()
    optimizer = SGDOptimizer(params, lr=0.1)
    optimizer.lr = 0.5
    set_gradients(params, [numpy.ones(p.shape) for p in params])
    optimizer.step()
    numpy.testing.assert_allclose(params[0].data, start - 0.5)


def test_zero_grad_clears_every_parameter_gradient():
    params = make_parameters()
    optimizer = MomentumSGDOptimizer(params, lr=0.1)
    set_gradients(params, gradients(0, params))
    assert all(p.grad.any() for p in params)
    optimizer.zero_grad()
    assert not any(p.grad.any() for p in params) and not optimizer.grad.any()


# -- packing ---------------------------------------------------------------------------------------

def test_packing_keeps_values_and_makes_views_of_one_buffer():
    params = make_parameters()
    values = [p.data.copy() for p in params]
    packed = PackedParameters(params)
    data, grad = packed.data, packed.grad
    assert data.shape == grad.shape == (sum(p.size for p in params),)
    numpy.testing.assert_array_equal(data, numpy.concatenate([v.ravel() for v in values]))
    for param, value in zip(params, values):
        assert param.shape == value.shape
        numpy.testing.assert_array_equal(param.data, value)
        assert numpy.shares_memory(param.data, data) and numpy.shares_memory(param.grad, grad)
    params[1].data[0] = 42.0       # parameter -> buffer
    assert data[6] == 42.0
    grad[-1] = 3.0                 # buffer -> parameter
    assert params[2].grad[0, 1, 1] == 3.0


def test_packing_rejects_mixed_dtypes_and_no_parameters():
    with pytest.raises(TypeError, match="net.to"):
        PackedParameters([Parameter(numpy.zeros(2)), Parameter(numpy.zeros(2, dtype="float32"))])
    with pytest.raises(ValueError, match="no parameters"):
        SGDOptimizer([], lr=0.1)


def test_a_network_trains_through_the_packed_views():
    """Layer backward writes into the optimizer's buffer; the step moves the layer's weights;
    loading a state dict afterwards writes into the buffer too."""
    config = yaml.safe_load((CONFIGS / "lenet.yaml").read_text())["model"]
    net = nets.build(config, seed=0, dtype="float64")
    optimizer = MomentumSGDOptimizer(net.parameters(), lr=0.1, momentum=0.9)
    rng = numpy.random.default_rng(0)
    images, labels = rng.random((4, 1, 28, 28)), rng.integers(0, 10, 4)

    optimizer.zero_grad()
    net.forward_loss(images, labels)
    net.backward()
    packed_grads = numpy.concatenate([p.grad.ravel() for p in net.parameters()])
    numpy.testing.assert_array_equal(optimizer.grad, packed_grads)
    assert packed_grads.any()
    before = [p.data.copy() for p in net.parameters()]
    optimizer.step()
    for param, old in zip(net.parameters(), before):
        numpy.testing.assert_allclose(param.data, old - 0.1 * param.grad, rtol=1e-12, atol=1e-15)

    fresh = nets.build(config, seed=1, dtype="float64").state_dict()
    net.load_state_dict(fresh)
    numpy.testing.assert_array_equal(
        optimizer.data, numpy.concatenate([fresh[name].ravel() for name, _ in net.named_parameters()]))


def lenet_step_data(seed=0):
    config = yaml.safe_load((CONFIGS / "lenet.yaml").read_text())["model"]
    rng = numpy.random.default_rng(seed)
    return config, rng.random((4, 1, 28, 28), dtype=numpy.float32), rng.integers(0, 10, 4)


def train_steps(net, optimizer, images, labels, steps=3):
    for _ in range(steps):
        optimizer.zero_grad()
        net.forward_loss(images, labels)
        net.backward()
        optimizer.step()


def test_moving_the_network_after_making_the_optimizer_keeps_training_it(device):
    """A new user's `.to(...)` after the optimizer: the optimizer follows the parameters (as
    PyTorch's does) and the weights end where they do without the move."""
    config, images, labels = lenet_step_data()
    reference = nets.build(config, seed=0).to(device)
    train_steps(reference, MomentumSGDOptimizer(reference.parameters(), lr=0.1),
                device.send(images), device.send(labels))

    net = nets.build(config, seed=0)
    optimizer = MomentumSGDOptimizer(net.parameters(), lr=0.1)
    net.to(device)
    train_steps(net, optimizer, device.send(images), device.send(labels))
    initial = nets.build(config, seed=0).state_dict()
    for (name, moved), (_, expected) in zip(net.named_parameters(), reference.named_parameters()):
        numpy.testing.assert_allclose(device.to_numpy(moved.data), device.to_numpy(expected.data),
                                      rtol=1e-6, atol=1e-7, err_msg=name)
        assert not numpy.array_equal(device.to_numpy(moved.data), initial[name]), name


def test_a_move_to_where_the_network_is_changes_nothing():
    config, images, labels = lenet_step_data()
    net = nets.build(config, seed=0)
    arrays = [(param.data, param.grad) for param in net.parameters()]
    net.to("cpu", dtype="float32")
    assert all(param.data is data and param.grad is grad
               for param, (data, grad) in zip(net.parameters(), arrays))


def test_casting_after_some_steps_keeps_the_momentum(device):
    config, images, labels = lenet_step_data()
    net = nets.build(config, seed=0).to(device)
    optimizer = MomentumSGDOptimizer(net.parameters(), lr=0.1)
    train_steps(net, optimizer, device.send(images), device.send(labels), steps=2)
    velocity = device.to_numpy(optimizer.velocity).copy()
    net.to(dtype="float64")
    optimizer.zero_grad()
    assert optimizer.velocity.dtype == optimizer.data.dtype == numpy.float64
    numpy.testing.assert_array_equal(device.to_numpy(optimizer.velocity), velocity)
    before = [device.to_numpy(param.data).copy() for param in net.parameters()]
    loss, _ = net.forward_loss(device.send(images.astype("float64")), device.send(labels))
    net.backward()
    optimizer.step()
    assert all(param.dtype == numpy.float64 for param in net.parameters())
    changed = [not numpy.array_equal(device.to_numpy(param.data), old)
               for param, old in zip(net.parameters(), before)]
    assert all(changed)


def test_loading_a_state_dict_after_making_the_optimizer_trains_the_loaded_weights():
    config, images, labels = lenet_step_data()
    net = nets.build(config, seed=0)
    optimizer = MomentumSGDOptimizer(net.parameters(), lr=0.1)
    net.load_state_dict(nets.build(config, seed=7).state_dict())
    reference = nets.build(config, seed=7)
    train_steps(net, optimizer, images, labels)
    train_steps(reference, MomentumSGDOptimizer(reference.parameters(), lr=0.1), images, labels)
    for moved, expected in zip(net.parameters(), reference.parameters()):
        numpy.testing.assert_array_equal(moved.data, expected.data)


# -- state -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("make_optimizer", [
    lambda params: SGDOptimizer(params, lr=0.1, weight_decay=0.01),
    lambda params: MomentumSGDOptimizer(params, lr=0.05, momentum=0.9, weight_decay=0.01),
], ids=["sgd", "momentum"])
def test_state_dict_round_trip_continues_identically(make_optimizer):
    params = make_parameters()
    optimizer = make_optimizer(params)
    for step in range(2):
        optimizer.zero_grad()
        set_gradients(params, gradients(step, params))
        optimizer.step()
    optimizer.lr = 0.02  # e.g. set by a schedule
    state = optimizer.state_dict()
    assert all(isinstance(v, (int, float, numpy.ndarray)) for v in state.values())

    resumed_params = [Parameter(p.data.copy()) for p in params]
    resumed = make_optimizer(resumed_params)
    resumed.load_state_dict(state)
    assert resumed.lr == 0.02 and resumed.steps == 2
    for step in range(2, 5):
        for opt, ps in [(optimizer, params), (resumed, resumed_params)]:
            opt.zero_grad()
            set_gradients(ps, gradients(step, ps))
            opt.step()
    for original, again in zip(params, resumed_params):
        numpy.testing.assert_array_equal(again.data, original.data)


def test_momentum_state_dict_is_a_host_copy_and_checks_its_shape():
    params = make_parameters()
    optimizer = MomentumSGDOptimizer(params, lr=0.1)
    set_gradients(params, gradients(0, params))
    optimizer.step()
    state = optimizer.state_dict()
    state["velocity"][...] = 0
    assert optimizer.velocity.any()
    with pytest.raises(ValueError, match="velocity"):
        optimizer.load_state_dict({**state, "velocity": numpy.zeros(3)})


# -- schedules -------------------------------------------------------------------------------------

def test_constant_schedule():
    schedule = Schedule("constant", 0.05, 5)
    assert [schedule(epoch) for epoch in (0, 0.5, 4.99, 5)] == [0.05] * 4


def test_step_schedule():
    schedule = Schedule("step", 0.1, 10, step_size=3, gamma=0.5)
    got = [schedule(epoch) for epoch in (0, 2.99, 3, 5.5, 6, 9.5)]
    assert got == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.0125], rel=1e-12)
    assert Schedule("step", 1.0, 3)(1) == pytest.approx(0.1)  # defaults: every epoch, x0.1


def test_cosine_schedule_without_warmup():
    schedule = Schedule("cosine", 0.1, 10, final_lr=0.01)
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(2.5) == pytest.approx(0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert schedule(5) == pytest.approx(0.055)
    assert schedule(10) == pytest.approx(0.01)
    assert schedule(12) == pytest.approx(0.01)  # past the end it stays at final_lr
    values = [schedule(e) for e in numpy.linspace(0, 10, 41)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_cosine_schedule_with_warmup():
    schedule = Schedule("cosine", 0.1, 10, warmup_epochs=2)
    assert 0 < schedule(0) < 0.001
    assert schedule(1) == pytest.approx(0.05, rel=1e-2)
    assert schedule(2) == pytest.approx(0.1)
    assert schedule(6) == pytest.approx(0.05)   # halfway through the cosine part
    assert schedule(10) == pytest.approx(0.0, abs=1e-15)
    warmup = [schedule(e) for e in numpy.linspace(0, 1.99, 20)]
    assert all(a < b for a, b in zip(warmup, warmup[1:]))


def test_cosine_warmup_never_exceeds_base_lr():
    schedule = Schedule("cosine", 0.1, 10, warmup_epochs=2)
    epochs = numpy.concatenate([numpy.linspace(0, 10, 1001), [2 - 1e-4]])
    assert max(schedule(e) for e in epochs) <= 0.1


def test_schedule_errors_come_at_construction():
    with pytest.raises(ValueError, match="cosine"):
        Schedule("cosnie", 0.1, 10)
    with pytest.raises((TypeError, ValueError), match="stepsize"):
        Schedule("step", 0.1, 10, stepsize=2)


# -- argument checks -------------------------------------------------------------------------------

BAD_HYPERPARAMETERS = [
    (dict(lr=0.0), "lr"), (dict(lr=-0.1), "lr"), (dict(lr=float("nan")), "lr"),
    (dict(lr=0.1, weight_decay=-1e-4), "weight_decay"),
    (dict(lr=0.1, weight_decay=float("nan")), "weight_decay"),
    (dict(lr=0.1, momentum=-0.1), "momentum"), (dict(lr=0.1, momentum=1.0), "momentum"),
    (dict(lr=0.1, momentum=1.5), "momentum"), (dict(lr=0.1, momentum=float("nan")), "momentum"),
]


@pytest.mark.parametrize("arguments,message", BAD_HYPERPARAMETERS, ids=[
    ",".join(f"{key}={value}" for key, value in arguments.items())
    for arguments, _ in BAD_HYPERPARAMETERS])
def test_bad_hyperparameters_raise_value_error(arguments, message):
    optimizer_class = MomentumSGDOptimizer if "momentum" in arguments else SGDOptimizer
    with pytest.raises(ValueError, match=message):
        optimizer_class(make_parameters(), **arguments)
    if "momentum" not in arguments:
        with pytest.raises(ValueError, match=message):
            MomentumSGDOptimizer(make_parameters(), **arguments)


@pytest.mark.parametrize("arguments", [dict(lr=float("inf")), dict(lr=0.1, weight_decay=float("inf"))],
                         ids=["lr-inf", "decay-inf"])
def test_infinite_hyperparameters_raise_value_error(arguments):
    with pytest.raises(ValueError):
        SGDOptimizer(make_parameters(), **arguments)


def test_optimizer_over_a_layer_uses_its_parameters_in_order():
    layer = layers.LinearLayer(3, 2, rng=0)
    optimizer = SGDOptimizer(layer.parameters(), lr=0.1)
    assert optimizer.data.size == layer.num_parameters() == 8
    numpy.testing.assert_array_equal(optimizer.data[:6], layer.weight.data.ravel())


@pytest.mark.parametrize("momentum", [None, 0.9, "adam", "adamw"])
def test_a_rate_kept_on_the_device_updates_as_the_number_does(device, momentum):
    """What a CUDA-graph step captures: `update()` reading the rate from a device array that
    setting `lr` writes, step after step, on every implementation (the fused kernels take it as
    their T argument)."""
    from xpnn.optim import MomentumSGDOptimizer, SGDOptimizer
    from xpnn.layers import Parameter
    rng = numpy.random.default_rng(3)

    def trained(on_device):
        params = [Parameter(device.send(rng_values.astype(numpy.float32)))
                  for rng_values in start]
        kind = {None: SGDOptimizer, "adam": AdamOptimizer, "adamw": AdamWOptimizer}.get(
            momentum, MomentumSGDOptimizer)
        extra = {} if momentum in (None, "adam", "adamw") else {"momentum": momentum}
        optimizer = kind(params, lr=0.1, weight_decay=1e-3, **extra)
        if on_device:
            optimizer.keep_lr_on_device()
        for lr, grads in zip((0.1, 0.05, 0.02), steps):
            optimizer.lr = lr
            for param, grad in zip(params, grads):
                param.grad[...] = device.send(grad.astype(numpy.float32))
            optimizer.update() if on_device else optimizer.step()
        if on_device:
            assert float(optimizer.lr_on_device) == numpy.float32(0.02)
            assert optimizer.lr_on_device.dtype == numpy.float32
            if momentum in ("adam", "adamw"):  # the update counted the steps on the device
                assert float(optimizer.steps_on_device) == 3 and optimizer.steps == 0
        return [device.to_numpy(param.data) for param in params]

    start = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    steps = [[rng.standard_normal(x.shape) for x in start] for _ in range(3)]
    for ours, reference in zip(trained(True), trained(False)):
        numpy.testing.assert_array_equal(ours, reference)
