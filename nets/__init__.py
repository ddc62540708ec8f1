"""Networks: a layer stack plus its loss layer, built from configs."""
from nets.builder import LAYER_TYPES, build
from nets.config import ConfigError
from nets.network import Network

__all__ = ["ConfigError", "LAYER_TYPES", "Network", "build"]
