"""One run of `python -m trainer.main`: train, evaluate and export, from a checked config.

Reads top to bottom: data -> model -> engines -> handlers -> run directory, then `launch` starts it in each process.
"""

import contextlib
import fcntl
import gc
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

import ignite
import ignite.distributed as idist
import torch
import torch.nn as nn
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, EarlyStopping, PiecewiseLinear, ProgressBar
from ignite.utils import manual_seed, setup_logger
from omegaconf import DictConfig, OmegaConf
from torch.multiprocessing.spawn import ProcessExitedException, ProcessRaisedException

from trainer.augment import PhotoAugment
from trainer.calibration import calibrate
from trainer.checkpoint import (
    CheckpointError, RandomState, adopt_resumed_files, continues_in, create_checkpoints, read_checkpoint, restore, run_dir_of,
)
from trainer.config import read_yaml, to_yaml
from trainer.data import CLASS_NAMES, EVAL_BATCH_SIZE, FOOTWEAR, MEAN, SLEEVED, STD, InMemoryLoader, Splits, denormalise, grey_image, load_splits
from trainer.engines import attach_ema, create_evaluator, create_lr_scheduler, create_optimizer, create_trainer, unwrap
from trainer.errors import UserError, fail
from trainer.export import save_model_file
from trainer.handlers.interrupt import GracefulStop
from trainer.machine import machine
from trainer.model import build_model
from trainer.photos import MANIFEST, classify_all, default_folder, read_manifest, summarise
from trainer.predict import Classifier
from trainer.safe_io import atomic_replace, atomic_write_json, safe_torch_load

STOPPED_AT_ONCE = "stopped by the user before a checkpoint could be written"


def get_dataflow(cfg: DictConfig) -> tuple[Splits, InMemoryLoader, InMemoryLoader, InMemoryLoader]:
    splits = load_splits(cfg.data.root, cfg.data.val_size, cfg.seed, cfg.data.download)
    rank, world = idist.get_rank(), idist.get_world_size()
    per_process = cfg.train.batch_size // world  # train.batch_size is global: the same steps whatever the world size
    train = InMemoryLoader(
        *splits.train, per_process, shuffle=True, seed=cfg.seed, rank=rank, world_size=world, drop_last=True,
        hflip=cfg.train.hflip, unflipped_classes=() if cfg.train.hflip_footwear else FOOTWEAR,
        max_shift=cfg.train.max_shift,
        augment=PhotoAugment(cfg.train.augment, MEAN, STD, FOOTWEAR, SLEEVED) if PhotoAugment.wanted(cfg.train.augment) else None,
    )
    val = InMemoryLoader(*splits.val, EVAL_BATCH_SIZE, rank=rank, world_size=world)
    test = InMemoryLoader(*splits.test, EVAL_BATCH_SIZE, rank=rank, world_size=world)
    return splits, train, val, test


def build_network(cfg: DictConfig) -> nn.Module:
    """The config's network, one output per class: built once before the run as its check, so that a mistaken
    model.* ends at once instead of after the data are loaded and the run directory is made."""
    if "num_classes" in cfg.model.kwargs:
        raise UserError("model.kwargs.num_classes is the trainer's to set (one output per class of Fashion-MNIST): drop it")
    return build_model(cfg.model.name, num_classes=len(CLASS_NAMES), **cfg.model.kwargs)


def initialize(cfg: DictConfig, epoch_length: int) -> tuple[nn.Module, torch.optim.Optimizer, nn.Module, PiecewiseLinear]:
    model = build_network(cfg)
    # Channels-last weights let oneDNN pick faster convolution kernels: about 20% per step for LeNet-5 on CPU.
    model = idist.auto_model(model.to(memory_format=torch.channels_last))
    optimizer = idist.auto_optim(create_optimizer(model, cfg))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    return model, optimizer, loss_fn, create_lr_scheduler(optimizer, cfg, epoch_length)


def name_run(cfg: DictConfig) -> Path | None:
    """Fix `run.name` (and, on resume, `output.root`) once, before any process starts, so all ranks agree. Returns the
    run directory when it made it: runs started in the same second each take a name of their own, and creating the
    directory is the claim on the name."""
    if cfg.run.name is not None:
        return None
    resumed = run_dir_of(cfg.resume) if cfg.resume else None
    if resumed is not None:
        cfg.run.name, cfg.output.root = resumed.name, str(resumed.parent)
        return None
    stamp, suffix, root = f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.model.name}", 1, Path(cfg.output.root)
    cfg.run.name = stamp
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 alone takes the name: the others share its second
        return None
    try:
        root.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                (root / cfg.run.name).mkdir()
                return root / cfg.run.name
            except FileExistsError:  # with the root in place, only a name taken
                suffix += 1
                cfg.run.name = f"{stamp}-{suffix}"
    except OSError:  # prepare_run_dir says why the place cannot be written
        return None


def holds_run(run_dir: Path) -> bool:
    """A directory holds a run once it has a checkpoint or a model; before that there is nothing to resume."""
    return any((run_dir / "checkpoints").glob("*.pt")) or (run_dir / "model.pt").exists()


def clear_unfinished_start(run_dir: Path) -> None:
    """Remove the TensorBoard files of a start stopped before its first checkpoint, so they do not show twice."""
    for stale in run_dir.glob("events.out.tfevents.*"):
        stale.unlink()
    for sub_run in run_dir.glob("loss_*/events.out.tfevents.*"):  # add_scalars' loss_train and loss_validation
        sub_run.unlink()
        with contextlib.suppress(OSError):  # anything else in it is not this trainer's
            sub_run.parent.rmdir()
    (run_dir / "projector_config.pbtxt").unlink(missing_ok=True)
    shutil.rmtree(run_dir / "projector", ignore_errors=True)


def remove_unfinished_start(run_dir: Path) -> None:
    """What a start that ended before its first checkpoint wrote (nothing there to resume), and the directory itself
    unless something else is in it: a refused or stopped start leaves no run behind for TensorBoard to list."""
    clear_unfinished_start(run_dir)
    (run_dir / "config.yaml").unlink(missing_ok=True)
    for folder in (run_dir / "checkpoints", run_dir):
        try:
            folder.rmdir()
        except OSError:  # not empty: files that are not this start's
            return


def prepare_run_dir(cfg: DictConfig) -> tuple[Path, int]:
    """Create the run directory and its config.yaml up front, so an unwritable place fails before training, and
    claim it for this run: return the claim (a file descriptor holding a lock on it), which the run closes at its end.

    A directory holding another run, or in use by one now, is refused; one whose run stopped before its first
    checkpoint starts afresh."""
    run_dir = Path(cfg.output.root) / cfg.run.name
    continued = continues_in(cfg.resume, run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        claim = os.open(run_dir, os.O_RDONLY)
        try:
            fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if holds_run(run_dir) and not continued:
                hint = (f"choose a new run.name to continue {cfg.resume} in" if cfg.resume
                        else "choose another run.name, or resume it with resume=CHECKPOINT")
                raise UserError(f"run directory {run_dir} already holds a run: {hint}")
            if not continued:
                clear_unfinished_start(run_dir)
            (run_dir / "checkpoints").mkdir(exist_ok=True)
            if continued:  # its config.yaml is rewritten once the checkpoint is known to fit: a refusal leaves it as it was
                tempfile.TemporaryFile(dir=run_dir).close()
            else:
                write_config(cfg, run_dir)
        except BaseException:
            os.close(claim)
            raise
    except BlockingIOError:  # the lock is held
        raise UserError(f"run directory {run_dir} is in use by another run now: choose another run.name") from None
    except OSError as exc:
        raise UserError(f"cannot write the run directory {run_dir}: {exc.strerror or exc}") from None
    return run_dir, claim


def write_config(cfg: DictConfig, run_dir: Path) -> None:
    """The run's recipe, which `--config` takes to repeat it, without `resume`: the checkpoint a run resumed from in
    place is one its rotation deletes, and a new run from the recipe starts afresh (metrics.json says where a run
    resumed from)."""
    recipe = cfg.copy()
    recipe.resume = None
    atomic_replace(run_dir / "config.yaml", lambda tmp: Path(tmp).write_text(to_yaml(recipe)))


def log_epoch(logger: logging.Logger, trainer: Engine, evaluator: Engine, optimizer: torch.optim.Optimizer) -> None:
    m = evaluator.state.metrics
    logger.info(
        f"Epoch {trainer.state.epoch}/{trainer.state.max_epochs}  train loss {trainer.state.metrics['loss']:.4f}  "
        f"val loss {m['loss']:.4f}  val acc {m['accuracy']:.4f}  lr {optimizer.param_groups[0]['lr']:.4f}  "
        f"({trainer.state.times['EPOCH_COMPLETED'] or 0:.1f} s)"
    )


def load_best_weights(model: nn.Module, best: Checkpoint, key: str, take: bool = True) -> int:
    """Return the best checkpoint's epoch, and give every rank rank 0's weights to test: with `take` the best
    checkpoint's (its `key` entry), else rank 0's own, which are what it exports (with several processes, each
    rank's BatchNorm statistics average its own batches, so the ranks' last weights differ).

    A best checkpoint written before a resume that turned the moving average on has no `key` entry: its raw
    weights were what its run tested, so they are the ones taken."""
    model = unwrap(model)  # checkpoints hold the bare network, without DDP's "module." prefix
    state = model.state_dict()
    epoch = 0
    if idist.get_rank() == 0 and best.last_checkpoint is not None:
        checkpoint = safe_torch_load(Path(best.last_checkpoint), "best checkpoint")  # a DiskSaver's: the whole path
        progress = checkpoint["trainer"]
        epoch = progress["iteration"] // progress["epoch_length"]
        if take:
            state = checkpoint.get(key, checkpoint["model"])
    for name, tensor in model.state_dict().items():
        tensor.copy_(idist.broadcast(state[name].to(tensor.device), src=0))
    return int(idist.broadcast(epoch, src=0))


def export_examples(run_dir: Path, splits: Splits) -> None:
    """One test image per class, for the demo's clickable examples."""
    folder = run_dir / "examples"
    folder.mkdir(exist_ok=True)
    images, labels = splits.test
    for index, name in enumerate(CLASS_NAMES):
        if not (labels == index).any():  # a test set smaller than the official one may lack a class
            continue
        first = int((labels == index).nonzero()[0])
        grey_image(denormalise(images[first])).save(folder / f"{index}_{name.replace('/', '-')}.png")


def training(
    local_rank: int, cfg: DictConfig, extend: Callable[[Engine, Engine], None] | None = None, keep_unfinished: bool = False
) -> int:
    """One process's whole run; returns the exit code. Rank 0 alone writes files and logs progress.

    `extend(trainer, evaluator)` attaches more handlers after the run's own: a study's pruning (`trainer.search`).
    A start that ends before its first checkpoint removes what it wrote, unless `keep_unfinished`: a study's trial
    keeps its directory however it ends, to say how in its trial.json and HParams."""
    rank = idist.get_rank()
    if idist.get_world_size() > 1:  # processes on one machine share its cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // idist.get_nproc_per_node()))
    logger = setup_logger("trainer", level=logging.INFO if rank == 0 else logging.WARNING, format="%(asctime)s %(message)s")
    # Every engine logs an exception as it raises it on, to this run, which says it in one line (or Python in its
    # traceback): "Engine run is terminating due to exception" only said it again, up to twice more.
    logging.getLogger(f"{Engine.__module__}.{Engine.__name__}").setLevel(logging.CRITICAL)
    stop = GracefulStop()
    stop.install()  # before the set-up, which a spawned process would otherwise spend deaf to Ctrl-C (`launch`)
    resume_from = read_checkpoint(cfg.resume) if cfg.resume else None
    if resume_from is not None:
        check_same_schedule(cfg, resume_from)
        check_same_run(cfg)
    run_dir, claim = prepare_run_dir(cfg) if rank == 0 else (Path(cfg.output.root) / cfg.run.name, None)
    views = None
    try:  # the run directory's claim, the TensorBoard writer's thread and file are let go however the run ends
        manual_seed(cfg.seed)
        splits, train_loader, val_loader, test_loader = get_dataflow(cfg)
        model, optimizer, loss_fn, lr_scheduler = initialize(cfg, len(train_loader))
        device = idist.device()
        log_every = cfg.log.every or max(1, len(train_loader) // 5)  # each point costs a forward pass on the val subset
        trainer = create_trainer(model, optimizer, loss_fn, lr_scheduler, train_loader, cfg, device, log_every)
        ema = attach_ema(trainer, model, cfg.train.ema_decay)  # attached before the views: they read the latest average
        tested, tested_key = (ema.ema_model, "ema_model") if ema else (model, "model")  # validated, kept as best, exported
        evaluator = create_evaluator(tested, loss_fn, device)
        final_val = create_evaluator(tested, loss_fn, device)
        final_test = create_evaluator(tested, loss_fn, device, num_classes=len(CLASS_NAMES))

        # Handlers, in the order they fire at the end of an epoch: progress bar, validation, epoch line, checkpoints.
        if rank == 0 and sys.stderr.isatty():  # in a log file its frames would bury the epoch lines
            # Redrawn every 10 iterations: tqdm writes the whole bar to the terminal at every update.
            ProgressBar(persist=False).attach(
                trainer, output_transform=lambda loss: {"loss": loss}, event_name=Events.ITERATION_COMPLETED(every=10)
            )
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: evaluator.run(val_loader))
        evaluator.add_event_handler(Events.COMPLETED, lambda: log_epoch(logger, trainer, evaluator, optimizer))
        random_state = RandomState()
        random_state.attach(trainer)
        to_save = {"model": model, "optimizer": optimizer, "lr_scheduler": lr_scheduler, "trainer": trainer, "random_state": random_state}
        if ema:
            to_save["ema_model"] = ema.ema_model
        if cfg.train.early_stopping_patience > 0:
            to_save["early_stopping"] = EarlyStopping(
                cfg.train.early_stopping_patience, Checkpoint.get_default_score_fn("accuracy"), trainer
            )
            evaluator.add_event_handler(Events.COMPLETED, to_save["early_stopping"])
        best, last = create_checkpoints(run_dir / "checkpoints", to_save, trainer)
        evaluator.add_event_handler(Events.COMPLETED, best)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, last)
        if resume_from is not None:  # before the TensorBoard views, whose writer makes a file: a refused resume writes none
            restore(resume_from, {**to_save, "best_checkpoint": best}, cfg.resume)
            if ema and "ema_model" not in resume_from:  # a checkpoint of a run without the average starts it afresh
                ema.ema_model.load_state_dict(ema.model.state_dict())  # ema.model: the bare network, as Ignite keeps it
            check_resumable(cfg, trainer, len(train_loader))
            adopt_resumed_files(cfg.resume, run_dir / "checkpoints", best, last, trainer.state.iteration)
            if rank == 0 and continues_in(cfg.resume, run_dir):
                write_config(cfg, run_dir)
            total = cfg.train.max_epochs * len(train_loader)
            logger.info(f"Resuming from {cfg.resume} after iteration {trainer.state.iteration} of {total}")
        if rank == 0 and cfg.tensorboard.enabled:
            from trainer.handlers.tensorboard import TensorBoardViews

            views = TensorBoardViews(cfg, run_dir, model, tested, loss_fn, splits, CLASS_NAMES)
            views.attach(trainer, evaluator, final_val, final_test, optimizer, log_every)
        stop.attach(trainer)
        if extend is not None:
            extend(trainer, evaluator)

        threads = torch.get_num_threads()
        logger.info(
            f"Training {cfg.model.name} on {device} ({threads} thread{'s' * (threads > 1)}) for {cfg.train.max_epochs} epochs; "
            f"run directory {run_dir}"
        )
        started = time.perf_counter()
        # a run that early stopping ended is finished too: resumed to finish its export, it trains no more
        stopped_early = "early_stopping" in to_save and to_save["early_stopping"].counter >= cfg.train.early_stopping_patience
        if trainer.state.iteration < cfg.train.max_epochs * len(train_loader) and not stopped_early:
            trainer.run(train_loader, max_epochs=cfg.train.max_epochs)
        elif views:  # a finished run resumed only to export: no STARTED event, yet a new run name wants its start views
            views.log_start_views(trainer)
        train_seconds = time.perf_counter() - started

        if stop.ended_run:  # else the training was over when the stop came: the run is exported, then says so
            last(trainer)
            checkpoint = Path(last.last_checkpoint)
            logger.info(f"Stopped at iteration {trainer.state.iteration}; checkpoint {checkpoint}")
            logger.info(f"Resume with: {resume_command(run_dir, checkpoint)}")
        else:
            # `train.export=last` keeps the weights the schedule ended with: after a schedule that decays to zero, the
            # last epochs differ by less than 5,000 validation images can tell, so the best of them is mostly noise.
            best_epoch = load_best_weights(tested, best, tested_key, take=cfg.train.export == "best")
            exported_epoch = best_epoch if cfg.train.export == "best" else trainer.state.epoch
            final_val.run(val_loader)
            final_test.run(test_loader)
            if rank == 0:
                metrics = finish_run(
                    cfg, run_dir, tested, splits, final_val, final_test, trainer, best_epoch, exported_epoch, train_seconds
                )
                if views:
                    views.log_calibration(metrics)
                    logger.info(f"TensorBoard views took {views.seconds:.1f} s of this run (the training took {train_seconds:.1f} s)")
                logger.info(f"Run directory {run_dir}: test accuracy {final_test.state.metrics['accuracy']:.4f}")
    finally:
        try:
            if views:
                views.close()
        finally:
            if claim is not None:
                if not keep_unfinished and not holds_run(run_dir):
                    remove_unfinished_start(run_dir)
                os.close(claim)
    # The other ranks wait for rank 0's checkpoint or export: a rank tearing down gloo while another works can abort,
    # and a rank that exits first gets the others terminated by torch's spawn, which a stopping rank 0 hears as a
    # second Ctrl-C.
    idist.barrier()
    if stop.ended_run:
        return stop.exit_code
    if stop.requested:  # a signal after the training's end, which the export did not stop for
        logger.info(f"Stopped after the training had ended: the run is finished and exported to {run_dir / 'model.pt'}")
        return stop.exit_code
    return 0


def resume_command(run_dir: Path, checkpoint: Path) -> str:
    """The command that resumes this run with as many processes: torchrun's own options are not ours to know."""
    launcher = "torchrun <its options, as before>" if os.environ.get("TORCHELASTIC_RUN_ID") else "python"
    return f"{launcher} -m trainer.main --config {shlex.quote(str(run_dir / 'config.yaml'))} {shlex.quote(f'resume={checkpoint}')}"


def check_resumable(cfg: DictConfig, trainer: Engine, epoch_length: int) -> None:
    if trainer.state.epoch_length != epoch_length:
        raise CheckpointError(
            f"checkpoint {cfg.resume} was made with {trainer.state.epoch_length} iterations per epoch, this config "
            f"gives {epoch_length}: resume with the same train.batch_size and data.val_size"
        )


def check_same_schedule(cfg: DictConfig, checkpoint: dict) -> None:
    """Refuse another train.max_epochs before anything is written: the restored one-cycle schedule keeps its own
    end, so extra epochs would train at learning rate 0, and fewer would stop before it had decayed."""
    progress = checkpoint["trainer"]  # anything but an engine's state is refused by `restore`, with its reason
    planned = progress.get("max_epochs") if isinstance(progress, dict) else cfg.train.max_epochs
    if planned != cfg.train.max_epochs:
        raise CheckpointError(
            f"checkpoint {cfg.resume} is of a {planned}-epoch run, whose one-cycle learning rate reaches 0 at its end, "
            f"so train.max_epochs={cfg.train.max_epochs} cannot resume it: resume with train.max_epochs={planned}, "
            "or start a new run to train longer"
        )


def check_same_run(cfg: DictConfig) -> None:
    """Refuse another seed or data.val_size than the run's own (its config.yaml, beside its checkpoints): they choose
    which training images are held out, so the resumed run would validate, and pick its best epoch, on images it has
    trained on. Refuse another network too: a margin or dropout adds no weights, so the checkpoint would load into
    it and go on as another network than the one it trained. A checkpoint moved away from its run has no config.yaml
    to compare with, and is not checked."""
    run_dir = run_dir_of(cfg.resume)
    if run_dir is None or not (run_dir / "config.yaml").is_file():
        return
    first = OmegaConf.create(read_yaml(run_dir / "config.yaml", "config file") or {})
    for key in ("seed", "data.val_size"):
        was = OmegaConf.select(first, key, default=None)
        if was is not None and was != OmegaConf.select(cfg, key):
            raise CheckpointError(
                f"checkpoint {cfg.resume} is of a run with {key}={was}, which chose the images it validates on: "
                f"resume with {key}={was}, or start a new run"
            )
    for key in ("model.name", "model.kwargs"):
        was, now = OmegaConf.select(first, key, default=None), OmegaConf.select(cfg, key)
        if was is not None and was != now:
            raise CheckpointError(
                f"checkpoint {cfg.resume} is of a run whose {key} was {plain(was)}, not {plain(now)}: its weights "
                f"belong to that network; resume with --config {run_dir / 'config.yaml'}, or start a new run"
            )


def plain(value: object) -> object:
    """A config value as Python prints it: {'margin': 1}, not a DictConfig's repr."""
    return OmegaConf.to_container(value) if isinstance(value, DictConfig) else value


def run_process(local_rank: int, cfg: DictConfig) -> None:
    """What each process runs: errors a user can cause become one line and exit code 2, on any rank."""
    try:
        code = training(local_rank, cfg)
    except UserError as exc:
        code = fail(exc)
    except KeyboardInterrupt:  # a second Ctrl-C; in a spawned process torch would report it as a success
        run_dir = Path(cfg.output.root) / cfg.run.name
        code = fail(f"stopped by the user at once: resume from the last checkpoint in {run_dir / 'checkpoints'}"
                    if holds_run(run_dir) else STOPPED_AT_ONCE, 130)
    except OSError as exc:  # the disk filled up or the run directory became unwritable while training
        where = exc.filename or Path(cfg.output.root) / cfg.run.name
        code = fail(f"cannot write {where}: {exc.strerror or exc}; checkpoints already written are intact", 1)
    if idist.get_world_size() > 1:
        # The engines' reference cycles keep the DDP model, and with it gloo's worker threads, alive until a cycle
        # collection; at interpreter exit, after Ignite has destroyed the process group, freeing them can abort.
        gc.collect()
    if code:
        sys.exit(code)


def finish_run(
    cfg: DictConfig, run_dir: Path, model: nn.Module, splits: Splits, final_val: Engine, final_test: Engine, trainer: Engine,
    best_epoch: int, exported_epoch: int, train_seconds: float,
) -> dict:
    """Write what outlives the run: `model.pt` (with its temperatures), `metrics.json` and the demo's examples."""
    cm = final_test.state.metrics["confusion"].cpu()
    per_class = (cm.diag() / cm.sum(1).clamp(min=1)).tolist()
    metrics = {
        "run_name": cfg.run.name,
        "val_accuracy": final_val.state.metrics["accuracy"],
        "val_loss": final_val.state.metrics["loss"],
        "test_accuracy": final_test.state.metrics["accuracy"],
        "test_loss": final_test.state.metrics["loss"],
        "per_class_test_accuracy": dict(zip(CLASS_NAMES, per_class)),
        "best_epoch": best_epoch,
        "exported_epoch": exported_epoch,  # best_epoch, or with `train.export=last` the last one
        "epochs_run": trainer.state.epoch,
        "train_seconds": round(train_seconds, 2),
        "machine": machine(),  # a seed's figures repeat to the digit only on the same processor, torch and threads
    }
    if cfg.resume:  # config.yaml keeps the recipe without it
        metrics["resumed_from"] = str(cfg.resume)
    bare = unwrap(model)
    # the demo's mirror view is an equally good look only for a model whose training mirrored every class
    mirror_views = cfg.train.hflip and cfg.train.hflip_footwear
    calibration = calibrate(bare, splits.val, splits.test, cfg.calibration.photo_factor, mirror_views)
    metrics["calibration"] = calibration
    save_model_file(
        run_dir / "model.pt",
        bare,
        {
            "arch": cfg.model.name,
            "arch_kwargs": {"num_classes": len(CLASS_NAMES), **cfg.model.kwargs},
            "class_names": CLASS_NAMES,
            "mean": [MEAN],
            "std": [STD],
            "input_size": [1, 28, 28],
            "run_name": cfg.run.name,
            "val_accuracy": metrics["val_accuracy"],
            "test_accuracy": metrics["test_accuracy"],
            "test_accuracy_views": calibration["test_accuracy_views"],  # each test image as the demo reads it
            "mirror_views": mirror_views,
            "epoch": exported_epoch,
            "temperature": calibration["temperature"],
            "photo_temperature": calibration["photo_temperature"],
            "versions": {"torch": str(torch.__version__), "ignite": str(ignite.__version__)},
        },
    )
    photos = photos_to_measure(cfg)
    if photos is not None:
        metrics["real_photos"] = measure_photos(run_dir / "model.pt", photos)
    atomic_write_json(metrics, run_dir / "metrics.json")
    export_examples(run_dir, splits)
    return metrics


def photos_to_measure(cfg: DictConfig) -> Path | None:
    """The folder of real photos the run ends by measuring: `data.photos`, else `realphotos/` beside the data."""
    photos = Path(cfg.data.photos) if cfg.data.photos else default_folder(cfg.data.root)
    return photos if cfg.data.measure_photos and (photos / MANIFEST).is_file() else None


def measure_photos(model_file: Path, folder: Path) -> dict:
    """How the exported model does on real photos, through the demo's own path; the figures that say the most."""
    summary = summarise(classify_all(Classifier(model_file), read_manifest(folder)))
    keep = ("n", "macro_top1", "macro_top1_interval", "macro_top3", "refused", "confidence", "sure")
    return {"folder": str(folder), **{key: summary[key] for key in keep},
            "per_class_top1": {group: c["top1"] for group, c in summary["per_class"].items()}}


def launch_settings(cfg: DictConfig) -> dict:
    """How `idist.Parallel` starts: in-process, by spawning `dist.nproc_per_node` processes, or under torchrun."""
    if cfg.device == "cpu":  # hide GPUs before CUDA starts, so idist and every spawned process use the CPU
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda was asked for but no CUDA GPU is available: use device=auto or device=cpu")
    if cfg.data.photos and cfg.data.measure_photos and not (Path(cfg.data.photos) / MANIFEST).is_file():
        raise UserError(f"data.photos={cfg.data.photos} has no {MANIFEST}: point it at a folder of real photos with its manifest")
    if (photos := photos_to_measure(cfg)) is not None:
        read_manifest(photos)  # a manifest the run's end could not read is refused now, not after it
    backend, nproc = cfg.dist.backend, cfg.dist.nproc_per_node
    under_torchrun = "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ
    if under_torchrun or nproc > 1:
        backend = backend or ("nccl" if torch.cuda.device_count() >= max(nproc, 2) else "gloo")
    if backend == "nccl" and not torch.cuda.is_available():
        raise UserError("dist.backend=nccl needs CUDA GPUs and none is available: use dist.backend=gloo")
    # Ignite gives each process the GPU of its local rank whenever CUDA is there, gloo or not: too few GPUs would crash
    local = int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if under_torchrun else nproc
    if backend is not None and cfg.device != "cpu" and torch.cuda.is_available() and torch.cuda.device_count() < local:
        raise UserError(
            f"{local} processes on this machine but {torch.cuda.device_count()} GPU(s), and each process takes a GPU of its "
            "own: use device=cpu to train on the CPU, or one process per GPU"
        )
    world = int(os.environ["WORLD_SIZE"]) if under_torchrun else nproc
    if cfg.train.batch_size % world:
        raise UserError(f"train.batch_size={cfg.train.batch_size} (the global batch) must divide evenly among {world} processes")
    return {"backend": backend, "nproc_per_node": None if under_torchrun or backend is None else nproc}


def launch(cfg: DictConfig, process: Callable[[int, DictConfig], None]) -> int:
    """Check where and how to run, and the network (a `UserError` if it cannot), then run `process` in each of the
    processes `launch_settings` asks for; returns the exit code."""
    settings = launch_settings(cfg)
    build_network(cfg)
    made = name_run(cfg)
    # Ignite's own idiom for its launcher's lines ("Run ... in 1 processes", "End of run"), which tell a user nothing
    setup_logger("ignite.distributed.launcher.Parallel", level=logging.WARNING)
    if settings["nproc_per_node"]:  # the spawned processes handle Ctrl-C themselves: checkpoint, then exit
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with idist.Parallel(**settings) as parallel:
            parallel.run(process, cfg)
    except SystemExit as exc:
        return int(exc.code or 0)
    except ProcessExitedException as exc:
        return exc.exit_code if exc.exit_code > 0 else 1
    except ProcessRaisedException as exc:
        return fail(f"a training process failed: {str(exc).strip().splitlines()[-1]}", 1)
    except KeyboardInterrupt:
        return fail(STOPPED_AT_ONCE, 130)
    finally:
        if made is not None:  # still empty when the run was refused or stopped before it wrote anything there
            with contextlib.suppress(OSError):
                made.rmdir()
    return 0
