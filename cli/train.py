"""`xpnn train`: start a run from a config, or resume one."""
from pathlib import Path

import click

from xpnn.cli.options import (command_mode, config_option, data_dir_option, dataset_option,
                              device_option, load_config, mode_options, one_line, output_option,
                              precision_option, processes_option, set_option, shorthands)


@click.command()
@config_option()
@set_option
@device_option()
@mode_options()
@precision_option("same as --set train.precision=P: what a GPU's matrix products compute in  "
                  "[default: fp32]")
@output_option("run folder for checkpoints and metrics  [default: runs/<config>-<timestamp>]",
               file_okay=False, dir_okay=True)
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path),
              help="continue the run in this folder from its last.npz")
@click.option("--init-from", "init_from", type=click.Path(path_type=Path),
              help="start a new run from this run's weights (its best.npz, else last.npz; or "
                   "a .npz file), same architecture: fine-tuning; the optimizer starts afresh")
@click.option("--seeds", "seeds_text", metavar="SEEDS",
              help="train once per seed (0-4, or 0,3,7) into OUTPUT/seed-K and print test "
                   "accuracy as mean ± sd; again with the same -o, resume the unfinished runs")
@click.option("--epochs", type=int, help="same as --set train.epochs=N; with --resume, train a "
                                         "finished run on to N epochs in all")
@click.option("--batch-size", type=int, help="same as --set train.batch_size=N")
@click.option("--lr", type=float, help="same as --set train.lr=X")
@click.option("--seed", type=int, help="same as --set train.seed=N")
@click.option("--limit-train", type=click.IntRange(min=1),
              help="train on the first N training images only, after the validation set is "
                   "held out (quick runs)")
@click.option("--limit-test", type=click.IntRange(min=1),
              help="evaluate on the first N validation and N test images only (quick runs)")
@click.option("--checkpoint-every", type=click.IntRange(min=0),
              help="also save last.npz every N steps inside an epoch, 0 for never  [default: 200]")
@click.option("--workers", type=click.IntRange(min=1),
              help="CPU threads, each on a slice of every batch; given, the run is one process  "
                   "[default: the cores this process may use, shared among its host's ranks; a "
                   "resumed run's own]")
@processes_option
@dataset_option
@data_dir_option
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="show a progress bar on stderr")
def train(**args):
    """Train a network: -c CONFIG for a new run, or --resume RUN_DIR to continue one.

    Each epoch prints one line with train, validation and test loss and accuracy and appends it
    to RUN_DIR/metrics.jsonl; RUN_DIR/last.npz is saved every epoch (and every --checkpoint-every
    steps), RUN_DIR/best.npz at the best validation accuracy (the last data.validation training
    images, held out). Ctrl-C saves last.npz and exits with 130.

    Under mpiexec -n N (or with --processes N) each of the N ranks computes its slice of every
    batch; batch size, learning rate and results mean what they mean in one process.
    """
    from xpnn.cli.stopping import Stopped

    started = {}
    try:
        return _train(started, **args)
    except Stopped as stop:  # a signal outside the training loop: say whether it can go on
        folder = started["trainer"].run_dir if "trainer" in started else args["resume_dir"]
        if folder is not None and _holds_a_checkpoint(folder):
            stop.run_dir = folder
        raise


def _train(started, config_spec, overrides, device, array_code, eager, precision, output,
           resume_dir, init_from, seeds_text, epochs, batch_size, lr, seed, limit_train,
           limit_test, checkpoint_every, workers, processes, dataset, data_dir, progress):
    from xpnn.backend import get_device
    from xpnn.backend.communicator import launched_size
    from xpnn.backend.device import parse_device_name
    from xpnn.cli.ranks import default_processes, rank_device, start_ranks
    from xpnn.training import resume_run, start_run
    from xpnn.training.errors import RunFolderError
    from xpnn.training.fit import done_line, finished_what, start_line
    from xpnn.training.runs import FolderTakenError, default_run_dir

    extend_to = epochs if resume_dir is not None else None
    overrides = shorthands(None if extend_to else epochs, batch_size, lr, seed, precision,
                           dataset) + list(overrides)
    if resume_dir is not None and config_spec is not None and extend_to is not None:
        raise click.UsageError("--epochs with --resume extends the run's own config: drop -c")
    if resume_dir is not None:
        given = [override.flag for override in overrides] + [
            flag for flag, value in (("--output", output), ("--limit-train", limit_train),
                                     ("--limit-test", limit_test), ("--init-from", init_from))
            if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} cannot be combined with --resume: a "
                                   f"resumed run keeps the settings it was started with")
    elif config_spec is None:
        raise click.UsageError("give -c CONFIG to start a run, or --resume RUN_DIR to continue one")
    if seeds_text is not None and (resume_dir is not None or seed is not None):
        raise click.UsageError(f"--seeds cannot be combined with "
                               f"{'--resume' if resume_dir is not None else '--seed'}: give -c "
                               f"CONFIG --seeds ... -o PARENT (again, to resume the seeds' runs)")
    if seeds_text is not None:
        from xpnn.training.seeds import format_seeds, parse_seeds, run_seeds
        seeds = parse_seeds(seeds_text)

    config = load_config(config_spec, overrides) if config_spec is not None else None
    if processes is None:
        processes, note = default_processes(
            device, config["train"]["batch_size"] if config else 1, workers, resume_dir)
        if note:
            click.echo(f"note: {note}", err=True)
    # on one of several ranks, XPNN_PROCESSES (inherited from the launching process) is no ask
    from_environment = (click.get_current_context().get_parameter_source("processes")
                        is click.core.ParameterSource.ENVIRONMENT)
    if processes > 1 and not (launched_size() > 1 and from_environment):
        if parse_device_name(device) is None:  # a CPU mode every rank would refuse: refuse once
            precision = config["train"]["precision"] if config is not None else "fp32"
            command_mode(get_device("cpu"), processes, eager, array_code, precision)
        raise SystemExit(start_ranks(processes))
    device, ranks = rank_device(device)
    mode = command_mode(device, ranks.size, eager, array_code)
    echo = click.echo if ranks.is_root else (lambda message: None)
    settings = dict(data_dir=data_dir, checkpoint_every=checkpoint_every, workers=workers,
                    ranks=ranks, progress=progress, mode=mode)
    new_run = dict(settings, limit_train=limit_train, limit_test=limit_test, init_from=init_from)
    if seeds_text is not None:
        parent = output or default_run_dir(f"{Path(config_spec).stem}-seeds")
        results = run_seeds(config, device, parent, seeds, echo=echo, **new_run)
        echo(format_seeds(results))
        echo(f"the runs and their summary (seeds.json) are in {parent}")
        return
    if resume_dir is not None:
        trainer = started["trainer"] = resume_run(resume_dir, device, config=config,
                                                  epochs=extend_to, **settings)
        if trainer.finished:
            echo(f"nothing to do: {resume_dir} {finished_what(trainer)}")
            return
        echo(f"resuming {resume_dir} at epoch {trainer.epoch + 1} step {trainer.step}/"
             f"{trainer.steps_per_epoch} on {_where(device, ranks)}")
    else:
        for attempt in range(1, 4):
            try:
                trainer = started["trainer"] = start_run(
                    config, device, output or default_run_dir(config_spec), **new_run)
                break
            except FolderTakenError:  # a run started the same second took the default name
                if output is not None or attempt == 3:
                    raise
        echo(start_line(trainer, _where(device, ranks)))
    try:
        metrics = trainer.fit()
    except OSError as error:
        if not error.filename:  # not a file of the run (a closed pipe, say)
            raise
        raise RunFolderError(_write_failed(error, trainer.run_dir, ranks)) from None
    echo(done_line(metrics, trainer.run_dir))


def _holds_a_checkpoint(folder):
    from xpnn.training.checkpoint import LAST_NAME
    return (Path(folder) / LAST_NAME).exists()


def _write_failed(error, run_dir, ranks):
    """The line for a write that failed while training (a full disk, a folder gone read-only):
    the file, the reason, and how to go on (checkpoints are written atomically: always whole)."""
    from xpnn.cli.ranks import continue_command

    if not _holds_a_checkpoint(run_dir):
        return (f"{one_line(error)}; nothing of the run was kept; free some space (or fix the "
                f"folder) and start it again")
    return (f"{one_line(error)}; the last checkpoint in {run_dir} is whole: free some space (or "
            f"fix the folder), then continue with: "
            f"{continue_command(click.get_current_context(), ranks, run_dir)}")


def _where(device, ranks):
    return device.name if ranks.size == 1 else f"{ranks.size} ranks ({device.name} each)"
