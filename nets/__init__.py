"""Networks: a layer stack and its loss layer, built from configs and described by one."""
if __name__ != "xpnn.nets":  # `import nets` finds this only from a checkout's root
    raise ImportError(f"{__name__} is part of the package xpnn: import xpnn.nets")
from xpnn.nets.builder import DEFAULT_NUM_CLASSES, LAYER_TYPES, build, check
from xpnn.nets.config import ConfigError
from xpnn.nets.description import model_section
from xpnn.nets.network import Network
from xpnn.nets.parallel import DataParallel

__all__ = ["ConfigError", "DEFAULT_NUM_CLASSES", "DataParallel", "LAYER_TYPES", "Network",
           "build", "check", "model_section"]
