"""xpnn: a small, fast, from-scratch deep-learning library on NumPy (CPU) and CuPy (CUDA GPU).

The subpackages (layers, nets, optim, data, training, backend, ...) are the top-level folders
of a checkout, mapped into the package by pyproject.toml. `import xpnn` imports none of them,
so the command line starts fast: `xpnn.fit` (training.fit.fit) is imported on first use.
"""
__version__ = "0.4.1"


def __getattr__(name):
    if name == "fit":
        from xpnn.training.fit import fit
        return fit
    raise AttributeError(f"module 'xpnn' has no attribute {name!r}")
