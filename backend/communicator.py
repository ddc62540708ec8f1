"""Ranks of one data-parallel job (`world()`): who we are, and the collectives a training step
needs. `Ranks` itself is one process; `MPIRanks` moves NumPy arrays through mpi4py, `NCCLRanks`
CuPy arrays through NCCL. Every wait has a deadline (`XPNN_RANK_TIMEOUT`)."""
import math
import os
import pickle
import time

import numpy

# How many ranks MPICH's, Intel MPI's and Slurm's (PMI), Open MPI's and MVAPICH's launchers started
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
TIMEOUT_VARIABLE = "XPNN_RANK_TIMEOUT"
DEFAULT_TIMEOUT = 300.0  # seconds; rank 0's test-set evaluation and checkpoint fit well inside
# MPI moves data only inside MPI calls, so a wait polls: yielding the core, then every ms
_SPIN_SECONDS = 0.05
_POLL_SECONDS = 0.001


class RankError(RuntimeError):
    """The ranks cannot work together: MPI missing, a rank stopped answering, rank 0's error."""


def timeout():
    """Seconds a rank waits for the others in one collective (`XPNN_RANK_TIMEOUT`, default 300)."""
    text = os.environ.get(TIMEOUT_VARIABLE)
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0
    if not 0 < seconds < math.inf:
        raise RankError(f"{TIMEOUT_VARIABLE}={text!r} is not a number of seconds > 0; unset it "
                        f"for the default {DEFAULT_TIMEOUT:g}")
    return seconds


def launched_size():
    """The number of ranks a launcher started this process among (1 when none did)."""
    for name in LAUNCHER_SIZE_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


class Ranks:
    """The ranks of a job and their collectives; as itself, one process (collectives do nothing)."""
    size = 1
    rank = 0
    local_rank = 0
    local_size = 1

    @property
    def is_root(self):
        return self.rank == 0

    def broadcast(self, buffer):
        """Copy rank 0's `buffer` (any shape) into every rank's, in place."""

    def sum_in_rank_order(self, buffer):
        """Replace every rank's `buffer` by the sum over ranks, added in rank order."""

    def broadcast_object(self, value):
        """Rank 0's `value` (picklable) on every rank."""
        return value

    def wait(self):
        """Wait, at most the ranks' timeout, for the collectives queued on this rank's device."""

    def on_root(self, function):
        """`function()` called on rank 0 only; its result, or its error, on every rank."""
        return function()

    def shard(self, count):
        """This rank's slice of `count` items (`even_slices`); empty where count < size."""
        return even_slices(count, self.size)[self.rank]

    def wait_for_all(self, seconds):
        """True if every rank reached this point within `seconds` (no error raised)."""
        return True

    def gather_text(self, text):
        """Every rank's `text` on rank 0 (None elsewhere); only after `wait_for_all` is True."""
        return [text]

    def abort(self, exit_code):
        """End every rank of the job now."""
        raise SystemExit(exit_code)


class MPIRanks(Ranks):
    """The ranks of MPI's world communicator, exchanging NumPy arrays through mpi4py."""

    def __init__(self):
        try:
            from mpi4py import MPI
        except ImportError as error:
            raise RankError(f"this process was started as one of {launched_size()} MPI ranks, "
                            f"but mpi4py cannot be imported ({error}); pip install 'xpnn[mpi]'"
                            ) from None
        self.comm = MPI.COMM_WORLD
        self.size, self.rank = self.comm.Get_size(), self.comm.Get_rank()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)  # the ranks on this host
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        self.control = self.comm.Dup()  # its own channel, so it never meets a pending collective
        self.timeout = timeout()
        self._gathered = {}  # (size, dtype) -> the (ranks, size) array an all-gather fills

    def _wait(self, done, what):
        """Return once `done()` is true; `RankError` if `self.timeout` seconds pass first."""
        if not _poll(done, self.timeout):
            raise RankError(
                f"rank {self.rank} of {self.size}: no answer from the other ranks in {what} for "
                f"{self.timeout:g} s (a rank stopped or hangs); stopping the job (set "
                f"{TIMEOUT_VARIABLE} to wait longer)")

    def broadcast(self, buffer):
        self._wait(self.comm.Ibcast(_contiguous(buffer), root=0).Test, "a broadcast")

    def sum_in_rank_order(self, buffer):
        flat = _contiguous(buffer).reshape(-1)
        gathered = self._gathered_for(flat, numpy)
        self._wait(self.comm.Iallgather(flat, gathered).Test,
                   "a sum (the gradients', or the loss's)")
        add_rows_in_order(flat, gathered)

    def _gathered_for(self, flat, xp):
        key = (flat.size, flat.dtype.str, xp.__name__)
        if key not in self._gathered:
            self._gathered[key] = xp.empty((self.size, flat.size), dtype=flat.dtype)
        return self._gathered[key]

    def broadcast_object(self, value):
        data = numpy.frombuffer(pickle.dumps(value) if self.is_root else b"", dtype=numpy.uint8)
        length = numpy.array([data.size], dtype=numpy.int64)
        self.broadcast(length)
        payload = data.copy() if self.is_root else numpy.empty(int(length[0]), dtype=numpy.uint8)
        self.broadcast(payload)
        return value if self.is_root else pickle.loads(payload.tobytes())

    def on_root(self, function):
        outcome = None
        if self.is_root:
            try:
                outcome = ("value", function())
            except Exception as error:  # every rank must hear of it, or they wait forever
                outcome = ("error", (type(error), str(error)))
                self.broadcast_object(outcome)
                raise
        kind, payload = self.broadcast_object(outcome)
        if kind == "error":
            error_type, message = payload
            try:
                error = error_type(message)
            except TypeError:  # an error type that takes more than its message
                error = RankError(message)
            raise error from None
        return payload

    def wait_for_all(self, seconds):
        return _poll(self.control.Ibarrier().Test, seconds)

    def gather_text(self, text):
        return self.control.gather(text, root=0)

    def abort(self, exit_code):
        self.comm.Abort(exit_code)


class NCCLRanks(MPIRanks):
    """MPI's ranks, on their host's `local_rank`-th GPU, moving CuPy arrays through NCCL."""

    def __init__(self, device):
        super().__init__()
        from cupy.cuda import nccl
        if not getattr(nccl, "available", True):
            raise RankError("CuPy finds no NCCL library, which ranks on GPUs need; pip install "
                            "nvidia-nccl-cu12 (nvidia-nccl-cu13 for the gpu-cuda13 extra)")
        self.nccl = nccl
        self.cupy = device.xp
        self.cupy.cuda.Device(device.gpu_id).use()  # this rank's one GPU, for all its work
        unique_id = self.broadcast_object(nccl.get_unique_id() if self.is_root else None)
        self.nccl_comm = nccl.NcclCommunicator(self.size, unique_id, self.rank)

    def _nccl_type(self, array):
        return getattr(self.nccl, f"NCCL_{array.dtype.name.upper()}")  # NCCL_FLOAT32, ...

    def _wait_stream(self, what):
        """`_wait` for the work queued on the current stream."""
        event = self.cupy.cuda.Event(disable_timing=True)
        event.record()
        self._wait(lambda: event.done, f"NCCL's {what}")

    def broadcast(self, buffer):
        if isinstance(buffer, numpy.ndarray):  # host values (objects, flags) go through MPI
            return super().broadcast(buffer)
        buffer = _contiguous(buffer)
        stream = self.cupy.cuda.get_current_stream().ptr
        self.nccl_comm.bcast(buffer.data.ptr, buffer.size, self._nccl_type(buffer), 0, stream)
        self._wait_stream("broadcast")

    def sum_in_rank_order(self, buffer):
        if isinstance(buffer, numpy.ndarray):
            return super().sum_in_rank_order(buffer)
        flat = _contiguous(buffer).reshape(-1)
        gathered = self._gathered_for(flat, self.cupy)
        stream = self.cupy.cuda.get_current_stream().ptr
        self.nccl_comm.allGather(flat.data.ptr, gathered.data.ptr, flat.size,
                                 self._nccl_type(flat), stream)
        add_rows_in_order(flat, gathered)  # queued after the all-gather: no host wait per step

    def wait(self):
        self._wait_stream("all-gather of the gradients")


def _poll(done, seconds):
    """Call `done()` until it is true (return True) or `seconds` have passed (return False)."""
    started = time.monotonic()
    while not done():
        waited = time.monotonic() - started
        if waited > seconds:
            return False
        time.sleep(0 if waited < _SPIN_SECONDS else _POLL_SECONDS)
    return True


def even_slices(count, parts):
    """`parts` contiguous slices of `count` items, in order, sizes differing by at most one."""
    bounds = [count * i // parts for i in range(parts + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(parts)]


def add_rows_in_order(out, rows):
    """out = rows[0] + rows[1] + ..., added left to right (the order fixes the rounding)."""
    out[...] = rows[0]
    for row in rows[1:]:
        out += row


def _contiguous(buffer):
    if not buffer.flags.c_contiguous:
        raise ValueError("collectives work on contiguous arrays (the optimizer's packed buffers "
                         "are)")
    return buffer


_world = {}


def world(device=None):
    """The ranks this process belongs to, for arrays on `device` (None: the CPU): `Ranks()`
    unless a launcher started 2 or more, then one `NCCLRanks` for a GPU, else one `MPIRanks`."""
    if launched_size() < 2:
        return Ranks()
    kind = "nccl" if device is not None and device.is_gpu else "mpi"
    if kind not in _world:
        _world[kind] = NCCLRanks(device) if kind == "nccl" else MPIRanks()
    return _world[kind]
