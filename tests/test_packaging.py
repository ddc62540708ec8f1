"""The package: one top-level name (xpnn) whose subpackages are the repository's top-level
folders, a wheel that carries the configs and MNIST, dependency lists in step, no bare imports."""
import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

import xpnn

REPO = Path(__file__).resolve().parent.parent
OLD_TOP_LEVEL_NAMES = {"backend", "layers", "nets", "optim", "data", "training", "cli",
                       "inference", "configs", "tools", "run"}
tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def requirement_names(lines):
    return {re.split(r"[<>=!\[ ;]", line.strip(), maxsplit=1)[0].lower()
            for line in lines if line.strip() and not line.strip().startswith(("#", "-"))}


def test_every_subpackage_is_a_top_level_folder_mapped_into_xpnn():
    mapping = SETUPTOOLS["package-dir"]
    packages = set(SETUPTOOLS["packages"])
    assert mapping["xpnn"] == "xpnn"
    assert all(package == "xpnn" or package.startswith("xpnn.") for package in packages)
    for package in packages:
        parent, _, child = package.rpartition(".")
        folder = REPO / (mapping[package] if package in mapping else f"{mapping[parent]}/{child}")
        assert folder.is_dir(), (package, folder)
    library_folders = {mapping[package] for package in packages if package in mapping}
    python_files = {path.parent for folder in library_folders
                    for path in (REPO / folder).rglob("*.py")}
    mapped = {REPO / folder for folder in library_folders}
    assert python_files <= mapped, f"Python files outside the mapped packages: {python_files - mapped}"
    for folder in ("backend", "layers", "nets", "optim", "data", "training", "cli", "inference",
                   "configs", "tools"):
        assert mapping[f"xpnn.{folder}"] == folder


def source_files():
    folders = [value for value in SETUPTOOLS["package-dir"].values()] + [
        "tests", "benchmarks", "scripts"]
    files = {path for folder in folders for path in (REPO / folder).rglob("*.py")}
    return sorted(files | {REPO / "run.py"})


def test_no_module_imports_a_bare_top_level_name():
    """`import layers` would work in a checkout (its root is on sys.path) but not installed."""
    offenders = []
    for path in source_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} {name}" for name in names
                          if name.split(".")[0] in OLD_TOP_LEVEL_NAMES]
    assert not offenders


def test_requirement_files_and_conda_environment_are_in_step_with_pyproject():
    project = PYPROJECT["project"]
    wanted = requirement_names(project["dependencies"] + project["optional-dependencies"]["dev"])
    listed = requirement_names((REPO / "requirements.txt").read_text().splitlines())
    assert listed == wanted
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = requirement_names(entry for entry in environment["dependencies"]
                              if isinstance(entry, str))
    assert conda - {"python", "pip"} == wanted
    gpu = requirement_names((REPO / "requirements-gpu.txt").read_text().splitlines())
    assert gpu == requirement_names(project["optional-dependencies"]["gpu"]) == {
        "cupy-cuda12x", "nvmath-python"}
    mpi = requirement_names((REPO / "requirements-mpi.txt").read_text().splitlines())
    assert mpi == requirement_names(project["optional-dependencies"]["mpi"]) == {"mpi4py", "mpich"}
    conda_commented = requirement_names(line.strip().lstrip("#").strip().lstrip("- ")
                                        for line in (REPO / "environment.yml").read_text()
                                        .splitlines() if line.strip().startswith("# - "))
    assert mpi <= conda_commented, "environment.yml lacks the conda equivalents of the mpi extra"
    for extra in ("gpu", "gpu-cuda13"):
        assert all("[ctk]" in requirement for requirement in
                   project["optional-dependencies"][extra] if requirement.startswith("cupy")), \
            "CuPy without its CUDA libraries"


def test_version_is_in_the_changelog():
    assert re.fullmatch(r"\d+\.\d+\.\d+", xpnn.__version__)
    first_release = re.search(r"^## (\S+)", (REPO / "CHANGELOG.md").read_text(), re.M).group(1)
    assert first_release == xpnn.__version__


def test_the_xpnn_command_is_installed_where_xpnn_is():
    command = shutil.which("xpnn", path=os.path.dirname(sys.executable))
    if command is None:
        pytest.skip("xpnn is not installed in this Python (pip install -e '.[dev]' installs it)")
    completed = subprocess.run([command, "--version"], capture_output=True, text=True,
                               timeout=60)
    assert completed.stdout.strip() == f"xpnn, version {xpnn.__version__}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from the checkout (no network: the installed setuptools builds it)."""
    try:
        import setuptools
    except ImportError:
        pytest.skip("building the wheel needs setuptools (pip install -e '.[dev]')")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"building the wheel needs setuptools>=77, this is {setuptools.__version__} "
                    f"(pip install -e '.[dev]')")
    folder = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(folder), str(REPO)], capture_output=True, text=True, timeout=300,
        env={**os.environ, "TMPDIR": str(build)})
    assert completed.returncode == 0, completed.stderr
    wheels = list(folder.glob("xpnn-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


@pytest.mark.slow
def test_the_wheel_installs_only_xpnn_with_its_configs_and_mnist(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"xpnn", f"xpnn-{xpnn.__version__}.dist-info"}
    for needed in ["xpnn/__main__.py", "xpnn/cli/main.py", "xpnn/configs/resnet.yaml",
                   "xpnn/data/mnist/t10k-images-idx3-ubyte.gz", "xpnn/inference/onnx_export.py",
                   "xpnn/backend/max_pool.cu", "xpnn/backend/common.cuh", "xpnn/tools/bench.py",
                   f"xpnn-{xpnn.__version__}.dist-info/licenses/LICENSE"]:
        assert needed in names
    assert not [name for name in names if "/tests/" in name or "benchmarks" in name]
    entry_points = zipfile.ZipFile(wheel).read(
        f"xpnn-{xpnn.__version__}.dist-info/entry_points.txt").decode()
    assert "xpnn = xpnn.cli:main" in entry_points


@pytest.mark.slow
def test_the_installed_wheel_runs_from_any_folder(wheel, tmp_path):
    target = tmp_path / "site"
    completed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                                "--target", str(target), str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}

    def run(*args):
        done = subprocess.run([sys.executable, *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    where = run("-c", "import xpnn, xpnn.backend; print(xpnn.__file__); "
                      "print(xpnn.backend.get_device('cpu'))")
    assert where.splitlines() == [str(target / "xpnn" / "__init__.py"), "Device('cpu')"]
    assert run("-m", "xpnn", "--version").strip() == f"xpnn, version {xpnn.__version__}"
    assert run("-m", "xpnn", "describe", "-c", "resnet").endswith("Total parameters: 117,066\n")
    out = run("-m", "xpnn", "train", "-c", "lenet", "--epochs", "1", "--limit-train", "300",
              "--limit-test", "100", "--no-progress", "-o", "run")
    assert "done: last epoch test accuracy" in out and (elsewhere / "run" / "best.npz").is_file()


def test_only_xpnn_names_import(tmp_path):
    """One import path: `xpnn.backend`, never `backend` (not even from a checkout's root, where
    Python itself finds every folder: each subpackage refuses a bare name in one line),
    `xpnn.tests` or `xpnn.benchmarks`."""
    folders = sorted(name.split(".")[1] for name in SETUPTOOLS["package-dir"] if "." in name)
    script = ("import importlib\n"
              f"for name in {folders + ['xpnn.tests', 'xpnn.benchmarks', 'xpnn.build']!r}:\n"
              "    try:\n"
              "        importlib.import_module(name)\n"
              "    except ImportError as error:\n"
              "        if not isinstance(error, ModuleNotFoundError):  # found, and refused\n"
              "            assert str(error) == f'{name} is part of the package xpnn: '\\\n"
              "                                 f'import xpnn.{name}', error\n"
              "        continue\n"
              "    raise SystemExit(f'{name} imports')\n"
              "import xpnn.backend, xpnn.cli\n")
    for folder in (tmp_path, REPO):
        done = subprocess.run([sys.executable, "-c", script], cwd=folder, capture_output=True,
                              text=True)
        assert done.returncode == 0, (folder, done.stdout + done.stderr)
