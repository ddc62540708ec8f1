"""xpnn: a small, fast, from-scratch deep-learning library on NumPy (CPU) and CuPy (CUDA GPU).

The subpackages (layers, nets, training, ...) are a checkout's top-level folders, mapped in by
pyproject.toml; `import xpnn` imports none of them: `xpnn.fit` is imported on first use.
"""
__version__ = "0.4.2"


def __getattr__(name):
    if name == "fit":
        from xpnn.training.fit import fit
        return fit
    raise AttributeError(f"module 'xpnn' has no attribute {name!r}")
