"""xpnn: a small, fast, from-scratch deep-learning library on NumPy (CPU) and CuPy (CUDA GPU).

    import xpnn
    history = xpnn.fit("lenet", train=(images, labels), epochs=3)   # training.fit.fit
    from xpnn import layers, nets, optim, data, training
    from xpnn.backend import get_device

The subpackages are the top-level folders of a checkout (DESIGN.md), mapped into the package
by pyproject.toml (``pip install -e .``). `import xpnn` imports none of them, so the command
line starts fast: `xpnn.fit` is imported on first use.
"""
__version__ = "0.4.0"


def __getattr__(name):
    if name == "fit":  # imported on first use: `import xpnn` stays light
        from xpnn.training.fit import fit
        return fit
    raise AttributeError(f"module 'xpnn' has no attribute {name!r}")
