"""Networks: a layer stack plus its loss layer, built from configs."""
from nets.builder import LAYER_TYPES, build
from nets.config import ConfigError
from nets.network import Network
from nets.parallel import DataParallel

__all__ = ["ConfigError", "DataParallel", "LAYER_TYPES", "Network", "build"]
