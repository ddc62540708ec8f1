"""How many ranks `xpnn train` starts when --processes is not given (`cli.ranks.default_processes`):
one per core on the CPU where MPI is installed, else one process with a note saying why."""
import importlib.util

import pytest

from xpnn.cli import ranks as launch


@pytest.fixture
def two_cores_with_mpi(monkeypatch):
    monkeypatch.setattr("xpnn.backend.cpu_count", lambda: 2)
    monkeypatch.setattr(launch, "find_mpiexec", lambda: "/usr/bin/mpiexec")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "mpi4py" else real_find_spec(name, *a))
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS"):
        monkeypatch.delenv(name, raising=False)


def test_a_cpu_run_starts_one_rank_per_core_where_mpi_is_installed(two_cores_with_mpi):
    assert launch.default_processes("cpu", batch_size=100) == (2, None)


@pytest.mark.parametrize("device", ["gpu", "cuda:1"])
def test_a_gpu_run_is_one_process(two_cores_with_mpi, device):
    assert launch.default_processes(device, batch_size=100) == (1, None)


def test_threads_asked_for_with_workers_keep_one_process(two_cores_with_mpi):
    assert launch.default_processes("cpu", batch_size=100, workers=2) == (1, None)


def test_no_more_ranks_than_images_in_a_batch(two_cores_with_mpi):
    assert launch.default_processes("cpu", batch_size=1) == (1, None)


def test_one_core_is_one_process(two_cores_with_mpi, monkeypatch):
    monkeypatch.setattr("xpnn.backend.cpu_count", lambda: 1)
    assert launch.default_processes("cpu", batch_size=100) == (1, None)


def test_a_rank_never_starts_ranks_of_its_own(two_cores_with_mpi, monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    assert launch.default_processes("cpu", batch_size=100) == (1, None)


@pytest.mark.parametrize("missing", ["mpiexec", "mpi4py"])
def test_without_mpi_it_trains_on_threads_and_says_what_would_be_faster(
        two_cores_with_mpi, monkeypatch, missing):
    if missing == "mpiexec":
        monkeypatch.setattr(launch, "find_mpiexec", lambda: None)
    else:
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    count, note = launch.default_processes("cpu", batch_size=100)
    assert count == 1
    assert note == ("training on 2 threads; with pip install 'xpnn[mpi]' it would run as 2 "
                    "ranks, measured faster, with the same results")


def test_a_resumed_run_keeps_the_ranks_it_was_trained_on(two_cores_with_mpi, tmp_path,
                                                         monkeypatch):
    from types import SimpleNamespace
    monkeypatch.setattr("xpnn.training.checkpoint.load_checkpoint",
                        lambda path: SimpleNamespace(state=SimpleNamespace(ranks=3)))
    assert launch.default_processes("cpu", 100, resume_dir=tmp_path) == (3, None)


def test_a_resume_that_cannot_read_its_checkpoint_is_one_process_and_reports_there(
        two_cores_with_mpi, tmp_path):
    assert launch.default_processes("cpu", 100, resume_dir=tmp_path / "nothing") == (1, None)
