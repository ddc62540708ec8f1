"""Networks: a layer stack plus its loss layer, built from configs."""
from xpnn.nets.builder import DEFAULT_NUM_CLASSES, LAYER_TYPES, build, check
from xpnn.nets.config import ConfigError
from xpnn.nets.network import Network
from xpnn.nets.parallel import DataParallel

__all__ = ["ConfigError", "DEFAULT_NUM_CLASSES", "DataParallel", "LAYER_TYPES", "Network",
           "build", "check"]
