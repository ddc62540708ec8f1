"""--device gpu where CuPy is installed but cannot run: one line naming what is missing. Checked
with a stand-in for CuPy, so it runs on machines without a GPU."""
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
        self.get_array_module = lambda *arrays: numpy  # no array is ever a fake CuPy array

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
def fake_cupy(monkeypatch):
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
