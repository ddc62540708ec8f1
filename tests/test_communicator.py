"""The ranks' collectives. Run as they are (one rank: every collective changes nothing) and
under `mpiexec -n 2 python -m pytest -q tests/test_communicator.py` (CI), where every rank runs
every test in the same order and the collectives really travel."""

import functools

import numpy
import pytest

from xpnn import nets
from xpnn.backend.communicator import (RankError, Ranks, add_rows_in_order,
                                       launched_size, timeout, world)
from xpnn.nets import DataParallel
from xpnn.training import load_config
from xpnn.training.errors import CheckpointError


@pytest.fixture(scope="module")
def ranks():
    return world()


def test_one_process_is_a_single_rank_without_mpi(ranks):
    if launched_size() > 1:
        pytest.skip("runs as one process only (here under mpiexec)")
    assert isinstance(ranks, Ranks) and (ranks.size, ranks.rank) == (1, 0)
    assert ranks.is_root and ranks.wait_for_all(0)


def test_broadcast_gives_every_rank_rank_0s_values(ranks):
    values = numpy.arange(7, dtype=numpy.float32) + 100 * ranks.rank
    ranks.broadcast(values)
    assert numpy.array_equal(values, numpy.arange(7, dtype=numpy.float32))


def test_sum_is_the_rank_order_sum_on_every_rank(ranks):
    rng = numpy.random.default_rng(5)
    every = rng.standard_normal((ranks.size, 1001)).astype(numpy.float32) * 10.0 ** rng.integers(
        -6, 6, (ranks.size, 1001))
    buffer = every[ranks.rank].copy()
    ranks.sum_in_rank_order(buffer)
    expected = every[0].copy()
    for row in every[1:]:
        expected += row
    assert numpy.array_equal(buffer, expected)


def test_add_rows_in_order_adds_left_to_right():
    rows = numpy.array([[1e8], [1.0], [-1e8]], dtype=numpy.float32)
    out = numpy.empty(1, dtype=numpy.float32)
    add_rows_in_order(out, rows)
    assert out[0] == (numpy.float32(1e8) + numpy.float32(1.0)) - numpy.float32(1e8)


def test_objects_and_root_errors_reach_every_rank(ranks):
    assert ranks.broadcast_object({"rank": ranks.rank, "list": [1, 2]}) == {"rank": 0,
                                                                            "list": [1, 2]}
    assert ranks.on_root(lambda: ranks.rank) == 0

    def fails():
        raise CheckpointError("checkpoint x.npz does not exist")
    with pytest.raises(CheckpointError, match="^checkpoint x.npz does not exist$"):
        ranks.on_root(fails)
    assert ranks.wait_for_all(60)


@functools.lru_cache(maxsize=None)
def lenet_net():
    return nets.build(load_config("lenet")["model"])


@pytest.mark.parametrize("count", [1, 2, 3, 7, 100])
def test_shards_are_the_slices_data_parallel_gives_its_workers(count):
    for size in (1, 2, 3):
        if count < size:
            continue
        shards = []
        for rank in range(size):
            single = Ranks()
            single.size, single.rank = size, rank
            shards.append(single.shard(count))
        slices, _ = DataParallel(lenet_net(), size)._split(count, lambda replica, items: items)
        assert shards == slices


def test_timeout_comes_from_the_environment_and_is_checked(monkeypatch):
    monkeypatch.delenv("XPNN_RANK_TIMEOUT", raising=False)
    assert timeout() == 300
    monkeypatch.setenv("XPNN_RANK_TIMEOUT", "2.5")
    assert timeout() == 2.5
    for bad in ("soon", "0", "-1", "inf", "nan"):
        monkeypatch.setenv("XPNN_RANK_TIMEOUT", bad)
        with pytest.raises(RankError, match=f"XPNN_RANK_TIMEOUT='{bad}' is not a number of "
                                            f"seconds > 0; unset it for the default 300"):
            timeout()



def test_nccl_wait_waits_for_queued_collectives_with_a_deadline():
    """No host wait inside a step; `wait` (before every device read) gives up after the
    timeout with a one-line error instead of hanging."""
    from types import SimpleNamespace

    from xpnn.backend.communicator import NCCLRanks

    class NeverDone:
        done = False

        def record(self):
            pass

    ranks = NCCLRanks.__new__(NCCLRanks)  # no GPU here: only what wait reads
    ranks.rank, ranks.size, ranks.timeout = 1, 2, 0.05
    ranks.cupy = SimpleNamespace(cuda=SimpleNamespace(Event=lambda disable_timing: NeverDone()))
    with pytest.raises(RankError, match=r"^rank 1 of 2: no answer from the other ranks in NCCL's "
                                        r"all-gather of the gradients for 0.05 s \(a rank stopped"):
        ranks.wait()
    assert Ranks().wait() is None

def test_launchers_are_recognised_by_their_variables(monkeypatch):
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert launched_size() == 1
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert launched_size() == 4


@pytest.fixture
def gpu():
    """The first GPU, for NCCL ranks at world size 1 (a lent machine has one GPU)."""
    pytest.importorskip("cupy", reason="NCCL ranks need CuPy and a CUDA GPU")
    pytest.importorskip("mpi4py", reason="NCCL ranks take their id over MPI (pip install "
                                         "'xpnn[mpi]')")
    from xpnn.backend import get_device, gpu_unavailable_reason
    reason = gpu_unavailable_reason()
    if reason:
        pytest.skip(reason)
    if launched_size() > 1:
        pytest.skip("NCCL is checked at one rank (one GPU)")
    from cupy.cuda import nccl
    if not getattr(nccl, "available", True):
        pytest.skip("CuPy finds no NCCL library (pip install nvidia-nccl-cu12)")
    return get_device("gpu")


@pytest.mark.gpu
def test_nccl_collectives_at_one_rank(gpu):
    from xpnn.backend.communicator import NCCLRanks
    ranks = NCCLRanks(gpu)
    values = gpu.xp.arange(5, dtype=gpu.xp.float32)
    ranks.sum_in_rank_order(values)
    ranks.broadcast(values)
    assert gpu.to_numpy(values).tolist() == [0, 1, 2, 3, 4]
    assert ranks.broadcast_object("id") == "id"

def train_briefly(device, ranks, run_dir):
    """Weights and momentum after 3 steps of resnet on 300 images, trained on `ranks`."""
    from xpnn.training import load_config, start_run
    config = load_config("resnet", {"train.epochs": 1})
    trainer = start_run(config, device, run_dir, limit_train=300, limit_test=50, workers=1,
                        ranks=ranks, progress=False)
    trainer.fit()
    return [device.to_numpy(array).copy() for array in (trainer.optimizer.data,
                                                         trainer.optimizer.velocity)]


def assert_trains_as_one_process(device, make_ranks, tmp_path):
    if launched_size() > 1:
        pytest.skip("compares one MPI rank with one plain process")
    alone = train_briefly(device, Ranks(), tmp_path / "alone")
    on_ranks = train_briefly(device, make_ranks(), tmp_path / "ranks")
    for a, b in zip(alone, on_ranks):
        assert numpy.array_equal(a, b)


def test_one_mpi_rank_trains_as_one_process(tmp_path):
    pytest.importorskip("mpi4py", reason="needs mpi4py (pip install 'xpnn[mpi]')")
    from xpnn.backend import CPU
    from xpnn.backend.communicator import MPIRanks
    assert_trains_as_one_process(CPU, MPIRanks, tmp_path)


@pytest.mark.gpu
def test_one_nccl_rank_trains_as_the_plain_gpu_step(gpu, tmp_path):
    from xpnn.backend.communicator import NCCLRanks
    assert_trains_as_one_process(gpu, lambda: NCCLRanks(gpu), tmp_path)


def test_processes_without_mpiexec_is_a_one_line_error(monkeypatch):
    if launched_size() > 1:
        pytest.skip("under mpiexec --processes is refused for another reason")
    from click.testing import CliRunner
    from xpnn.cli import ranks as cli_ranks
    from xpnn.cli.main import cli
    monkeypatch.setattr(cli_ranks.shutil, "which", lambda *args, **kwargs: None)
    result = CliRunner().invoke(cli, ["train", "-c", "lenet", "--processes", "2"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "Error: --processes 2 needs mpiexec, which is not installed; pip install 'xpnn[mpi]' "
        "(mpi4py and the mpich wheel)")
