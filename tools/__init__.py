"""Tools that measure the library rather than make it up: `bench` (time training steps, layer by
layer) and `parity` (one batch through a network under two devices or dtypes, compared tensor by
tensor). The user-facing commands are ``xpnn bench`` and ``xpnn parity``."""
if __name__ != "xpnn.tools":  # `import tools` finds this only from a checkout's root
    raise ImportError(f"{__name__} is part of the package xpnn: import xpnn.tools")
