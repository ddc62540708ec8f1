"""The benchmark tools: xpnn.tools.bench (timing, profile, subprocess), the PyTorch twins of our
networks, and the comparison script's plumbing. No assertion depends on how fast anything runs."""
import importlib.util
import math

import numpy
import pytest

from xpnn.optim import make_optimizer
from xpnn.tools.bench import (BenchResult, StepBench, benchmark, benchmark_in_subprocess,
                              load_config, profile_steps)

TORCH_MISSING = importlib.util.find_spec("torch") is None


@pytest.fixture(scope="module")
def lenet_config():
    return load_config("configs/lenet.yaml")


def top_level_rows(result):
    return [row for row in result.profile if row.depth == 0]


def test_benchmark_lenet_reports_sane_fields(lenet_config):
    result = benchmark(lenet_config, "cpu", batch_size=4, steps=2, warmup=1, profile=True)

    assert result.device == "cpu" and result.batch_size == 4 and result.steps == 2
    assert len(result.step_ms) == 2 and all(ms > 0 for ms in result.step_ms)
    assert result.min_ms <= result.median_ms <= result.max_ms
    assert result.images_per_s == pytest.approx(4 / (result.median_ms / 1e3))
    assert result.peak_memory_mib > 0 and "RSS" in result.memory_kind
    assert math.isfinite(result.final_loss)
    assert result.num_parameters == 107_786


def test_benchmark_times_the_trainers_data_parallel_step_or_the_bare_network(lenet_config):
    parallel = benchmark(lenet_config, "cpu", batch_size=4, steps=1, warmup=0, workers=2)
    bare = benchmark(lenet_config, "cpu", batch_size=4, steps=1, warmup=0, workers=0)

    assert parallel.workers == 2 and "DataParallel, 2 worker threads" in parallel.format()
    assert bare.workers == 0 and "the network itself" in bare.format()
    assert parallel.final_loss == pytest.approx(bare.final_loss, abs=1e-5)  # the same step
    assert parallel.cores_used > 0 and parallel.page_faults_per_step >= 0


def test_profile_covers_every_layer_and_sums_to_the_step(lenet_config):
    # the bare network: with DataParallel workers, the rows are one worker's share of the step
    result = benchmark(lenet_config, "cpu", batch_size=4, steps=2, warmup=1, profile=True,
                       workers=0)
    rows = top_level_rows(result)
    layer_count = len(lenet_config["model"]["layers"])

    names = [row.name for row in rows]
    assert [name.split()[0] for name in names[:layer_count]] == [str(i) for i in range(layer_count)]
    assert names[layer_count:] == ["loss (softmax cross-entropy)", "optimizer.zero_grad",
                                   "optimizer.update", "(between timers)"]
    assert all(row.forward_ms >= 0 and row.backward_ms >= 0 for row in rows[:-1])
    assert all(row.total_ms > 0 for row in rows[:layer_count])
    assert sum(row.total_ms for row in rows) == pytest.approx(result.profile_step_ms)
    timed = sum(row.total_ms for row in rows[:-1])
    assert 0.3 * result.profile_step_ms < timed <= result.profile_step_ms * 1.001

    text = result.format()
    assert "median" in text and "images/s" in text and "Profile" in text
    assert "0 Conv 1->6 k5" in text and "Linear 784->120" in text


def test_profile_lists_resnet_block_children_and_restores_methods():
    config = load_config("configs/resnet.yaml")
    runner = StepBench(config, "cpu", batch_size=2)
    runner.step()
    rows, step_ms = profile_steps(runner, steps=1)

    block_index = next(i for i, row in enumerate(rows) if "ResNetBlock" in row.name)
    inner = []
    for row in rows[block_index + 1:]:
        if row.depth == 0:
            break
        inner.append(row.name)
    assert inner == ["conv_layers.0 Conv 16->16 k3", "conv_layers.1 ReLU",
                     "conv_layers.2 Conv 16->16 k3", "add_layer Add", "relu2 ReLU", "(block glue)"]
    assert step_ms > 0
    everything = [runner.net.loss_layer, runner.optimizer]
    stack = list(runner.net.layers)
    while stack:
        layer = stack.pop()
        everything.append(layer)
        stack.extend(child for _, child in layer.named_children())
    assert not [obj for obj in everything
                if {"forward", "backward", "step", "zero_grad"} & set(vars(obj))]


def test_result_round_trips_through_a_dict(lenet_config):
    result = benchmark(lenet_config, "cpu", batch_size=2, steps=1, warmup=0, profile=True)
    copy = BenchResult.from_dict(result.to_dict())
    assert copy == result
    assert copy.format() == result.format()


def test_queue_time_is_measured_only_on_a_gpu_and_shown_as_a_share_of_the_step(lenet_config):
    result = benchmark(lenet_config, "cpu", batch_size=2, steps=1, warmup=0)
    assert result.queue_ms is None and "queue" not in result.format()

    queued = []
    times = StepBench(lenet_config, "cpu", batch_size=2).timed_steps(3, queued)
    assert len(queued) == 3 and all(0 < q <= t for q, t in zip(queued, times))

    result.step_ms, result.queue_ms = [4.0, 4.0, 4.0], [3.0, 3.0, 3.0]
    assert "host time to queue a step's kernels: median 3.00 ms (75% of the step" \
        in BenchResult.from_dict(result.to_dict()).format()


def test_benchmark_in_a_fresh_process(lenet_config):
    result = benchmark_in_subprocess(lenet_config, "cpu", batch_size=2, steps=1, warmup=0,
                                     label="lenet")
    assert result.label == "lenet" and len(result.step_ms) == 1 and result.peak_memory_mib > 0


def test_make_optimizer_follows_the_train_section(lenet_config):
    from xpnn.optim import MomentumSGDOptimizer, SGDOptimizer

    net_params = lambda: StepBench(lenet_config, batch_size=1).net.parameters()  # noqa: E731
    momentum = make_optimizer({"optimizer": "momentum_sgd", "lr": 0.1, "momentum": 0.5},
                              net_params())
    assert isinstance(momentum, MomentumSGDOptimizer) and momentum.momentum == 0.5
    plain = make_optimizer({"optimizer": "sgd", "lr": 0.1}, net_params(), lr=0.2)
    assert type(plain) is SGDOptimizer and plain.lr == 0.2
    with pytest.raises(ValueError, match="'rmsprop' is not known"):
        make_optimizer({"optimizer": "rmsprop"}, net_params())


def test_the_bench_times_the_trainers_own_step(tmp_path):
    """`xpnn bench` runs the step training runs, built the same way: on the same batch, with
    augmentation and label smoothing, N steps of each end with the same weights, optimizer
    state and running sums, bit for bit."""
    from xpnn.backend import CPU
    from xpnn.data import Dataset
    from xpnn.tools.bench import make_batch
    from xpnn.training.trainer import Trainer

    config = load_config("configs/lenet_augment.yaml", {"train.batch_size": 6,
                                                         "data.validation": 0})
    bench = StepBench(config, "cpu", batch_size=6, seed=0, lr=0.01, workers=2)
    images, labels = make_batch(config["model"], 6, seed=0)
    dataset = Dataset("batch", images, labels, images[:2], labels[:2], 10, tuple("0123456789"))
    trainer = Trainer(config, dataset, CPU, tmp_path, workers=2, progress=False)
    for _ in range(4):
        bench.step()
        trainer.train_step(bench.index, 0.01, bench.maps, 6)
    assert bench.maps is not None
    for (name, ours), (_, theirs) in zip(bench.net.named_parameters(),
                                         trainer.net.named_parameters()):
        assert numpy.array_equal(ours.data, theirs.data), name
    assert numpy.array_equal(bench.optimizer.velocity, trainer.optimizer.velocity)
    assert bench.optimizer.steps == trainer.optimizer.steps == 4
    assert bench.stats.read() == trainer.stats.read()


# -- the PyTorch twins -------------------------------------------------------------------------

@pytest.mark.skipif(TORCH_MISSING, reason="PyTorch is not installed (pip install torch==2.13.0)")
@pytest.mark.parametrize("name", ["lenet", "resnet_leaky"])
def test_torch_net_with_our_weights_gives_our_logits_and_loss(name):
    import torch

    from xpnn import nets
    from benchmarks.torch_nets import build_torch_net, copy_weights
    from xpnn.tools.bench import make_batch

    config = load_config(f"configs/{name}.yaml")
    ours = nets.build(config["model"], seed=3)
    theirs = build_torch_net(config["model"])
    copy_weights(ours, theirs)
    images, labels = make_batch(config["model"], batch_size=5, seed=3)
    images = images / numpy.float32(255)

    loss, logits = ours.forward_loss(images, labels)
    with torch.no_grad():
        torch_logits = theirs(torch.from_numpy(images))
        torch_loss = torch.nn.functional.cross_entropy(torch_logits, torch.from_numpy(labels))
    numpy.testing.assert_allclose(logits, torch_logits.numpy(), rtol=1e-5, atol=1e-5)
    assert float(loss) == pytest.approx(torch_loss.item(), abs=1e-5)


@pytest.mark.skipif(TORCH_MISSING, reason="PyTorch is not installed (pip install torch==2.13.0)")
def test_torch_training_step_follows_ours(lenet_config):
    """Same weights, batch and optimizer update: the losses agree after a few steps."""
    from benchmarks.torch_nets import TorchTrainingStep

    ours = StepBench(lenet_config, batch_size=4, lr=0.01)
    theirs = TorchTrainingStep(lenet_config, batch_size=4, lr=0.01)
    for _ in range(3):
        ours.step()
        theirs.step()
    assert float(ours.loss) == pytest.approx(theirs.loss.item(), abs=1e-4)
    assert len(theirs.timed_steps(1)) == 1


# -- the comparison script ---------------------------------------------------------------------

def test_compare_ours_only_runs_end_to_end(capsys):
    from benchmarks import compare_torch

    code = compare_torch.main(["--ours-only", "--configs", "lenet", "--batch-sizes", "2",
                               "--alone-steps", "1", "--warmup", "0", "--gap", "0",
                               "--wait-quiet", "0", "--retries", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "lenet" in out and "ours ms (alone)" in out and "PyTorch" not in out.split("\n\n")[-1]


def test_compare_says_how_to_install_torch_when_missing(monkeypatch, capsys):
    from benchmarks import compare_torch

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real_find_spec(name, *a))
    assert compare_torch.main(["--configs", "lenet", "--batch-sizes", "2"]) == 2
    err = capsys.readouterr().err
    assert "pip install torch==2.13.0" in err and "--ours-only" in err


def test_summary_table_ratios():
    from benchmarks.compare_torch import format_table, format_usage_table, summary_rows

    side = lambda ms: {"alternated": [ms, ms], "round_medians": [ms, ms],  # noqa: E731
                       "alone": [ms], "peak_rss_mib": 50.0,
                       "start_rss_mib": 30.0, "others_cores": [0.0, 0.1], "losses": [2.3],
                       "cores_used": [1.5], "system_ms_per_step": [2.0],
                       "page_faults_per_step": [100.0]}
    rows = summary_rows([(("lenet", 100), {"ours": side(30.0), "torch": side(10.0)})])
    assert rows[0]["ratio_alt"] == pytest.approx(3.0)
    assert rows[0]["ratio_alone"] == pytest.approx(3.0)
    assert "| lenet | 100 | 30.0 | 10.0 | 3.00 |" in format_table(rows, markdown=True)
    assert "1.50" in format_usage_table(rows) and "PyTorch faults/step" in format_usage_table(rows)
    assert "(busy)" not in format_table(rows) and "(busy)" in format_table(rows, max_others=0.01)


@pytest.mark.skipif(TORCH_MISSING, reason="PyTorch is not installed (pip install torch==2.13.0)")
def test_gpu_vs_torch_runs_end_to_end_on_the_cpu(tmp_path, capsys):
    import json

    from benchmarks import gpu_vs_torch

    out_json = tmp_path / "rows.json"
    assert gpu_vs_torch.main(["--device", "cpu", "--configs", "lenet", "--batch-sizes", "2",
                              "--variants", "array,fused,graph", "--rounds", "2", "--steps", "1",
                              "--warmup", "0", "--json", str(out_json)]) == 0
    output = capsys.readouterr().out
    assert "leaving out graph, torch graph (CUDA graphs need a GPU)" in output
    table = output.split("\n\n")[-1]
    assert "| lenet | 2 | cpu |" in table and "fused / torch eager" in table
    (row,) = json.loads(out_json.read_text())
    assert row["rounds"] == 2 and row["ratio_array_vs_torch_eager"] == pytest.approx(
        row["ours_array_ms"] / row["torch_eager_ms"])


def test_gpu_vs_torch_refuses_unknown_variants(capsys):
    from benchmarks import gpu_vs_torch
    with pytest.raises(SystemExit):
        gpu_vs_torch.main(["--variants", "array,graph-cudnn"])
    assert "--variants takes array, fused, graph, graph-fused" in capsys.readouterr().err


def test_the_cpu_convolution_candidates_agree_with_float64(monkeypatch, capsys):
    """benchmarks.cpu_conv_candidates (issue 22's measurements) runs and every candidate that
    computes the convolution matches float64."""
    import sys

    from benchmarks import cpu_conv_candidates

    monkeypatch.setattr(sys, "argv", ["cpu_conv_candidates", "--batch", "2", "--channels", "4",
                                      "--size", "4"])
    monkeypatch.setattr(cpu_conv_candidates, "median_ms", lambda call, repeats=40: 1.0)
    cpu_conv_candidates.main()
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:]}
    assert {"ours", "sgemm", "sgemm-wide", "winograd"} <= rows.keys()
    for name in ("ours", "winograd"):
        assert float(rows[name][2]) < 1e-4
