"""Tools that measure the library rather than make it up: `bench` (time training steps, layer by
layer) and `parity` (one batch through a network under two devices or dtypes, compared tensor by
tensor). The user-facing commands are ``xpnn bench`` and ``xpnn parity``."""
