"""xpnn: a small, fast, from-scratch deep-learning library on NumPy (CPU) and CuPy (CUDA GPU).

    import xpnn
    history = xpnn.fit("lenet", train=(images, labels), epochs=3)   # training.fit.fit
    from xpnn import layers, nets, optim, data, training
    from xpnn.backend import get_device

Subpackages: backend (devices, and the array primitives layers are written with, one
implementation per device), layers, nets (networks built from configs), optim, data (IDX files,
MNIST), training (configs, the loop, checkpoints), inference (trained networks on new images,
ONNX export), tools (bench, parity), configs (the shipped YAML files) and cli (the `xpnn`
command). `import xpnn` imports none of them, so the command line starts fast: `xpnn.fit`
is imported on first use. In a checkout they are the top-level folders, which pyproject.toml
maps into the package: install it (``pip install -e .``) to import them.
"""
__version__ = "0.3.0"


def __getattr__(name):
    if name == "fit":  # imported on first use: `import xpnn` stays light
        from xpnn.training.fit import fit
        return fit
    raise AttributeError(f"module 'xpnn' has no attribute {name!r}")
