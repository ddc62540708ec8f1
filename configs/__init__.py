"""The configs that ship with xpnn, one YAML file per network and recipe (``-c resnet``: this
folder's resnet.yaml); a package, so that an installed xpnn carries them."""
if __name__ != "xpnn.configs":  # `import configs` finds this only from a checkout's root
    raise ImportError(f"{__name__} is part of the package xpnn: import xpnn.configs")
from pathlib import Path


def shipped():
    """{name: path} of the shipped configs, sorted by name."""
    return {path.stem: path for path in sorted(Path(__file__).resolve().parent.glob("*.yaml"))}
