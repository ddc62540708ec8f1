"""The one switch: which implementation of the backend's primitives computes.

Each primitive (`correlate`, `max_pool`, `softmax_cross_entropy`, ...) has up to three
implementations, side by side in its module:

* ``cpu``: NumPy's, tuned for one core's caches (work in cache-sized chunks, products 8 wide);
* ``gpu``: array code over the whole batch in as few operations as possible, because on a GPU
  every array operation is a kernel launch costing ~10 us of host time (generic `xp` code: it
  runs on NumPy too, which is how the tests check it without a GPU);
* ``fused``: hand-written CUDA kernels (`backend.cuda`, sources in backend/*.cu), one per
  primitive. Unmeasured on a GPU so far, so off unless asked for (``xpnn ... --fused-kernels``).

By default NumPy arrays take ``cpu`` and CuPy arrays ``gpu``. `using` chooses otherwise for a
block of code (the command line wraps a GPU run in ``using("fused")``; the tests run the
``gpu`` implementations on NumPy). A choice applies only to arrays it can compute on: ``fused``
to CuPy arrays, and to NumPy arrays only while the tests' emulator runs CUDA kernels on the CPU
(`cuda.runs_on_host`); other NumPy arrays in the block (a CPU reference computed beside a GPU
run) keep ``cpu``. The choice is a context variable, so worker threads started with the
caller's context (`nets.DataParallel`) follow it.
"""
import contextlib
import contextvars

IMPLEMENTATIONS = ("cpu", "gpu", "fused")


class Switch:
    """A choice among `choices` that holds for a block of code (``with switch.using(choice):``)
    and is read with `chosen()`. A context variable, so worker threads started with the
    caller's context (`nets.DataParallel`) follow it. `what` names it in errors."""

    def __init__(self, what, choices, default):
        self.what, self.choices = what, tuple(choices)
        self._chosen = contextvars.ContextVar(f"xpnn_{what}", default=default)

    def chosen(self):
        return self._chosen.get()

    @contextlib.contextmanager
    def using(self, choice):
        if choice not in self.choices:
            known = ", ".join(str(name) for name in self.choices if name is not None)
            raise ValueError(f"unknown {self.what} {choice!r}; expected one of {known}")
        token = self._chosen.set(choice)
        try:
            yield
        finally:
            self._chosen.reset(token)


# None: the default implementation for the arrays' module.
_IMPLEMENTATION = Switch("implementation", (None, *IMPLEMENTATIONS), default=None)


def implementation(xp):
    """``"cpu"``, ``"gpu"`` or ``"fused"``: which implementation computes on arrays of `xp`."""
    from xpnn.backend import cuda
    chosen = _IMPLEMENTATION.chosen()
    on_numpy = xp.__name__ == "numpy"
    if chosen == "fused" and on_numpy and not cuda.runs_on_host():
        chosen = None  # CUDA kernels cannot compute on NumPy arrays
    if chosen is not None:
        return chosen
    return "cpu" if on_numpy else "gpu"


def using(name):
    """Within this block, every primitive runs its `name` implementation (None: the default,
    by array module)."""
    return _IMPLEMENTATION.using(name)


def fused_on(device, enabled):
    """`using("fused")` where `device` is a GPU and `enabled`; else a block that changes
    nothing (so a choice made around it, as the tests make, stands)."""
    return using("fused") if enabled and device.is_gpu else contextlib.nullcontext()


@contextlib.contextmanager
def running_on(device, fused=False, gemm=None):
    """The block a command computes in: `device` current (`Device.activated`), the fused
    CUDA kernels chosen where `device` is a GPU and `fused` (`fused_on`), and the GEMM that
    multiplies CuPy arrays (`backend.matmul.using_gemm`; None: as chosen around the block)."""
    from xpnn.backend.matmul import chosen_gemm, using_gemm
    with device.activated(), fused_on(device, fused), using_gemm(gemm or chosen_gemm()):
        yield


def pick(table, xp):
    """The function of `table` ({implementation: function}) for arrays of `xp`."""
    return table[implementation(xp)]
