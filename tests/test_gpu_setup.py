"""--device gpu where CuPy is installed but cannot run: one line naming what is missing. Checked
with a stand-in for CuPy, so it runs on machines without a GPU."""
import contextlib
import sys
import types

import numpy
import pytest
from click.testing import CliRunner

from xpnn.backend import DeviceUnavailableError, device as device_module, get_device
from xpnn.cli import cli


class FakeCuPy(types.ModuleType):
    """Just enough of CuPy for `get_device`: one GPU, and kernels that work or raise `error`."""

    def __init__(self, error=None):
        super().__init__("cupy")
        self.__version__ = "14.2.0"
        self.float32 = "float32"
        self.error = error
        self.probes = 0
        self.ndarray = type("ndarray", (), {})  # no array is ever a fake CuPy array

        class Device:
            def __init__(self, gpu_id):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc_info):
                return False

            def synchronize(self):
                pass

        self.cuda = types.SimpleNamespace(
            runtime=types.SimpleNamespace(getDeviceCount=lambda: 1), Device=Device)

    def arange(self, count, dtype):
        self.probes += 1
        if self.error is not None:
            raise self.error
        return _FakeArray()


class _FakeArray:
    def __mul__(self, other):
        return self

    def __add__(self, other):
        return self

    def __matmul__(self, other):
        return self

    def sum(self):
        return self

    def reshape(self, *shape):
        return self


def fake_pathfinder(found):
    """A stand-in for cuda.pathfinder that finds only the libraries in `found`."""
    module = types.ModuleType("cuda.pathfinder")

    def load(name):
        if name not in found:
            raise RuntimeError(f"lib{name} not found")

    module.load_nvidia_dynamic_lib = load
    module.find_nvidia_header_directory = lambda name: "/include" if name in found else None
    package = types.ModuleType("cuda")
    package.pathfinder = module
    return {"cuda": package, "cuda.pathfinder": module}


@pytest.fixture
def fake_cupy(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def install(error=None, found=None):
        cupy = FakeCuPy(error)
        monkeypatch.setitem(sys.modules, "cupy", cupy)
        monkeypatch.setattr(device_module, "_checked_toolkits", {})
        for name, module in (fake_pathfinder(found) if found is not None else
                             {"cuda": None, "cuda.pathfinder": None}).items():
            monkeypatch.setitem(sys.modules, name, module)
        return cupy
    return install


def test_cupy_without_its_cuda_libraries_names_what_is_missing(fake_cupy):
    fake_cupy(RuntimeError("CuPy failed to load libnvrtc.so.12"), found={"cudart"})
    with pytest.raises(DeviceUnavailableError) as caught:
        get_device("gpu")
    message = str(caught.value)
    assert message.startswith("CuPy 14.2.0 sees a GPU but cannot run kernels on it (missing: "
                              "NVRTC (libnvrtc), cuBLAS (libcublas); RuntimeError: CuPy failed "
                              "to load libnvrtc.so.12)")
    assert "pip install 'xpnn[gpu]' (CUDA 12.x drivers) or 'xpnn[gpu-cuda13]'" in message
    assert "\n" not in message


def test_without_pathfinder_the_error_itself_is_quoted(fake_cupy):
    fake_cupy(OSError("cannot open cuda_runtime.h"))
    with pytest.raises(DeviceUnavailableError, match=r"\(OSError: cannot open cuda_runtime.h\); "
                                                     r"pip install 'xpnn\[gpu\]'"):
        get_device("cuda:0")


def test_the_command_line_says_it_in_one_line(fake_cupy, tmp_path):
    fake_cupy(RuntimeError("nvrtc missing"), found=set())
    result = CliRunner().invoke(cli, ["train", "-c", "lenet", "--device", "gpu", "--output",
                                      str(tmp_path / "run")], prog_name="xpnn")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: CuPy 14.2.0 sees a GPU but cannot")
    assert "the CUDA runtime headers (cuda_runtime.h)" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_working_cupy_is_probed_once(fake_cupy):
    cupy = fake_cupy()
    first, second = get_device("gpu"), get_device("cuda:0")
    assert first == second and first.name == "cuda:0" and first.xp is cupy
    assert cupy.probes == 1


def with_versions(cupy, name="NVIDIA H200"):
    cupy.cuda.runtime.runtimeGetVersion = lambda: 13000
    cupy.cuda.runtime.driverGetVersion = lambda: 13000
    cupy.cuda.runtime.getDeviceProperties = lambda gpu_id: {"name": name.encode()}
    return cupy


def test_a_passing_probe_is_remembered_across_processes(fake_cupy, monkeypatch):
    cupy = with_versions(fake_cupy())
    get_device("gpu")
    assert cupy.probes == 1 and "NVIDIA H200" in device_module.probe_cache_path().read_text()
    monkeypatch.setattr(device_module, "_checked_toolkits", {})  # as a new process starts
    get_device("gpu")
    assert cupy.probes == 1
    other = with_versions(fake_cupy(), name="NVIDIA H100")  # another setup is probed
    get_device("gpu")
    assert other.probes == 1


def test_a_failing_probe_is_not_remembered(fake_cupy, monkeypatch):
    with_versions(fake_cupy(RuntimeError("nvrtc missing"), found=set()))
    with pytest.raises(DeviceUnavailableError):
        get_device("gpu")
    assert not device_module.probe_cache_path().exists()


# -- the run's device is CuPy's current device ------------------------------------------------------

class RecordingCuda:
    """`cuda.Device` of a stand-in CuPy that records which GPU was made current, and how."""

    def __init__(self):
        self.events = []
        recording = self

        class Device:
            def __init__(self, gpu_id):
                self.gpu_id = gpu_id

            def use(self):
                recording.events.append(("use", self.gpu_id))

            def __enter__(self):
                recording.events.append(("enter", self.gpu_id))
                return self

            def __exit__(self, *exc_info):
                recording.events.append(("exit", self.gpu_id))
                return False

        self.Device = Device


def test_a_gpu_device_becomes_current_for_a_block():
    """CuPy makes new arrays and launches kernels on its current device, not the one `send`
    copied to: `activated()` makes cuda:N current; on the CPU it does nothing."""
    cuda = RecordingCuda()
    gpu1 = device_module.Device("cuda:1", types.SimpleNamespace(cuda=cuda), 1)
    with gpu1.activated():
        cuda.events.append(("inside", None))
    assert cuda.events == [("enter", 1), ("inside", None), ("exit", 1)]
    with device_module.CPU.activated():
        pass


def test_commands_and_training_runs_compute_with_their_device_current(monkeypatch, tmp_path):
    """One mechanism, `running_on`: the trainer builds and trains inside it (with its mode)."""
    from xpnn.backend import CPU, dispatch
    from xpnn.training import start_run
    from xpnn.training.config import load_config
    entered = []
    monkeypatch.setattr(device_module.Device, "activated",
                        lambda self: entered.append(dispatch.mode()) or contextlib.nullcontext())
    config = load_config("lenet", [])
    config["train"].update(epochs=1, batch_size=50)
    trainer = start_run(config, CPU, tmp_path / "run", limit_train=100, limit_test=50,
                        progress=False)
    assert entered == [trainer.mode]                 # before the network and optimizer exist
    trainer.fit()
    assert entered == [trainer.mode, trainer.mode]   # and again in the thread that trains
    assert trainer.mode == dispatch.Mode()
