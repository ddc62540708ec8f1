"""Checkpoints: one `.npz` file, written atomically, holding everything needed to evaluate a
network or resume its run. Entries (plain arrays, so it loads with ``allow_pickle=False``):
    weights/<dotted parameter name>   the network's parameters, as trained (e.g. float32)
    optimizer/<name>                  array-valued optimizer state (e.g. the momentum velocity)
    meta                              a JSON string: format_version, optimizer_scalars (lr,
                                      steps), user (free-form metadata) and, in a training
                                      run's checkpoints, the run's state (`run_state.RunState`)
"""
import dataclasses
import json
import zipfile
import zlib
from pathlib import Path

import numpy

from xpnn.training.errors import CheckpointError
from xpnn.training.files import atomic_write
from xpnn.training.run_state import RunState, check_scalars

FORMAT_VERSION = 1
WEIGHTS_PREFIX = "weights/"
OPTIMIZER_PREFIX = "optimizer/"
META_KEY = "meta"
LAST_NAME = "last.npz"
BEST_NAME = "best.npz"


@dataclasses.dataclass
class Checkpoint:
    """What a checkpoint file holds, on the host: `weights` {dotted name: NumPy array}, the
    `optimizer`'s `state_dict()`, the run's `RunState` (None outside a run), the `user`
    metadata it was saved with, and the `path` it was read from."""
    weights: dict
    optimizer: dict
    state: RunState = None
    user: object = None
    path: Path = None

    @property
    def config(self):
        if self.state is None:
            raise CheckpointError(f"{self.path} was not saved by a training run, so it holds no "
                                  f"config; give the network's config with -c")
        return self.state.config

    @property
    def epoch(self):
        """Whole epochs completed (their evaluation included)."""
        return self.state.epoch if self.state else 0

    @property
    def step(self):
        """Training steps done in the next epoch."""
        return self.state.step if self.state else 0


def save_checkpoint(path, net, optimizer=None, user=None, state=None):
    """Write `net`'s weights, `optimizer`'s state (None: none, the weights alone), `user` (any
    JSON-able metadata, returned by `load_checkpoint` as `Checkpoint.user`) and a training run's
    `state` (a `RunState`) to `path`, atomically."""
    arrays = {WEIGHTS_PREFIX + name: value for name, value in net.state_dict().items()}
    scalars = {}
    for key, value in (optimizer.state_dict() if optimizer is not None else {}).items():
        if isinstance(value, numpy.ndarray):
            arrays[OPTIMIZER_PREFIX + key] = value
        else:
            scalars[key] = value
    meta = {**(dataclasses.asdict(state) if state else {}), "format_version": FORMAT_VERSION,
            "optimizer_scalars": scalars, "user": user}
    try:
        arrays[META_KEY] = numpy.array(json.dumps(meta, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"cannot save {path}: its metadata is not JSON ({error})") from None
    atomic_write(path, lambda f: numpy.savez(f, **arrays))


def load_checkpoint(path):
    """Read the checkpoint at `path`; raise `CheckpointError` if it is missing, corrupt, foreign
    or holds a metadata field of the wrong type or out of range."""
    path = Path(path)
    if path.is_dir():
        path = path / LAST_NAME
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with numpy.load(path, allow_pickle=False) as archive:
            entries = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): "
                              f"{' '.join(str(error).split())}") from None
    if META_KEY not in entries:
        raise CheckpointError(f"{path} is not an xpnn checkpoint: it has no {META_KEY!r} entry")
    try:
        meta = json.loads(entries.pop(META_KEY).item())
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{path} has an unreadable {META_KEY!r} entry: {error}") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version!r}; this version of "
                              f"xpnn reads version {FORMAT_VERSION}")
    missing = [key for key in ("config", "epoch", "step") if key not in meta]
    if 0 < len(missing) < 3:
        raise CheckpointError(f"{path} is incomplete: its metadata lacks {', '.join(missing)}")
    state = RunState.from_json(meta, path) if not missing else None
    scalars = meta.get("optimizer_scalars", {})
    check_scalars(path, scalars)
    weights, optimizer = ({name[len(prefix):]: value for name, value in entries.items()
                           if name.startswith(prefix)}
                          for prefix in (WEIGHTS_PREFIX, OPTIMIZER_PREFIX))
    return Checkpoint(weights, {**optimizer, **scalars}, state, meta.get("user"), path)


def check_matches(net, weights, source="checkpoint"):
    """Raise `CheckpointError`, naming the first mismatch, unless `weights` has exactly
    `net`'s parameter names, shapes and dtypes."""
    params = dict(net.named_parameters())
    for name, param in params.items():
        shape, dtype = tuple(param.shape), numpy.dtype(param.dtype)
        if name not in weights:
            problem = f"the network's parameter {name!r} {shape} is not in it"
        elif tuple(weights[name].shape) != shape:
            problem = (f"parameter {name!r} has shape {tuple(weights[name].shape)} in it but "
                       f"{shape} in the network")
        elif numpy.dtype(weights[name].dtype) != dtype:
            problem = (f"parameter {name!r} has dtype {weights[name].dtype} in it but {dtype} in "
                       f"the network")
        else:
            continue
        break
    else:
        extra = [name for name in weights if name not in params]
        if not extra:
            return
        problem = f"it has parameter {extra[0]!r}, which the network lacks"
    raise CheckpointError(f"{source} does not fit the network {net.name!r} (another "
                          f"architecture?): first mismatch: {problem}")


def restore(checkpoint, net, optimizer=None):
    """Load `checkpoint`'s weights into `net` (its state into `optimizer`), after checking them."""
    source = f"checkpoint {checkpoint.path}" if checkpoint.path else "checkpoint"
    check_matches(net, checkpoint.weights, source)
    net.load_state_dict(checkpoint.weights)
    if optimizer is not None:
        try:
            optimizer.load_state_dict(checkpoint.optimizer)
        except (KeyError, ValueError, TypeError) as error:
            raise CheckpointError(f"{source} holds optimizer state that does not fit "
                                  f"{type(optimizer).__name__}: {error}") from None


def mark_stopped_early(path, epoch):
    """Mark the run checkpoint at `path` (best.npz) stopped early after `epoch`, atomically: its
    state's `stopped_early` and its user metadata's ``stopped_early_after``, all else kept."""
    with numpy.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(arrays[META_KEY].item())
    meta["stopped_early"] = True
    user = meta.get("user")
    meta["user"] = {**(user if isinstance(user, dict) else {}), "stopped_early_after": epoch}
    arrays[META_KEY] = numpy.array(json.dumps(meta, allow_nan=False))
    atomic_write(path, lambda f: numpy.savez(f, **arrays))
