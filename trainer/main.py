"""`python -m trainer.main [--config FILE] [key.sub=value ...]`: train, evaluate and export, from one config.

Reads top to bottom: config -> data -> model -> engines -> handlers -> run directory.
"""

import argparse
import logging
import sys
import time
from datetime import datetime
from pathlib import Path

import ignite
import ignite.distributed as idist
import torch
import torch.nn as nn
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, EarlyStopping, ProgressBar
from ignite.utils import manual_seed, setup_logger
from omegaconf import DictConfig

from trainer.checkpoint import CheckpointError, create_checkpoints, load_checkpoint, run_dir_of
from trainer.config import DEFAULT_CONFIG, load_config, to_yaml
from trainer.data import CLASS_NAMES, MEAN, STD, InMemoryLoader, Splits, denormalise, load_splits
from trainer.engines import create_evaluator, create_lr_scheduler, create_optimizer, create_trainer
from trainer.errors import UserError
from trainer.export import save_model_file
from trainer.handlers.interrupt import GracefulStop
from trainer.model import build_model
from trainer.safe_io import atomic_write_json, safe_torch_load

EVAL_BATCH_SIZE = 1024


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainer.main", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: configs/default.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_epochs=3 data.root=../shared/data")
    return parser.parse_args(argv)


def get_dataflow(cfg: DictConfig) -> tuple[Splits, InMemoryLoader, InMemoryLoader, InMemoryLoader]:
    splits = load_splits(cfg.data.root, cfg.data.val_size, cfg.seed, cfg.data.download)
    rank, world = idist.get_rank(), idist.get_world_size()
    train = InMemoryLoader(*splits.train, cfg.train.batch_size, shuffle=True, seed=cfg.seed, rank=rank, world_size=world, drop_last=True)
    val = InMemoryLoader(*splits.val, EVAL_BATCH_SIZE, rank=rank, world_size=world)
    test = InMemoryLoader(*splits.test, EVAL_BATCH_SIZE, rank=rank, world_size=world)
    return splits, train, val, test


def initialize(cfg: DictConfig, epoch_length: int):
    model = idist.auto_model(build_model(cfg.model.name, num_classes=len(CLASS_NAMES), **cfg.model.kwargs))
    optimizer = idist.auto_optim(create_optimizer(model, cfg))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    return model, optimizer, loss_fn, create_lr_scheduler(optimizer, cfg, epoch_length)


def prepare_run_dir(cfg: DictConfig) -> Path:
    """Name, create and claim the run directory up front, so an unwritable place fails before training."""
    if cfg.run.name is None:
        resumed = run_dir_of(cfg.resume) if cfg.resume else None
        cfg.run.name = resumed.name if resumed else f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.model.name}"
        if resumed is not None:
            cfg.output.root = str(resumed.parent)
    run_dir = Path(cfg.output.root) / cfg.run.name
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    except OSError as exc:
        raise UserError(f"cannot write the run directory {run_dir}: {exc.strerror or exc}") from None
    return run_dir


def log_epoch(logger: logging.Logger, trainer: Engine, evaluator: Engine, optimizer: torch.optim.Optimizer) -> None:
    m = evaluator.state.metrics
    logger.info(
        f"Epoch {trainer.state.epoch}/{trainer.state.max_epochs}  train loss {trainer.state.metrics['loss']:.4f}  "
        f"val loss {m['loss']:.4f}  val acc {m['accuracy']:.4f}  lr {optimizer.param_groups[0]['lr']:.4f}  "
        f"({trainer.state.times['EPOCH_COMPLETED'] or 0:.1f} s)"
    )


def load_best_weights(model: nn.Module, best: Checkpoint) -> int:
    """Copy the best checkpoint's weights into `model` on every rank; return the epoch they come from."""
    state = model.state_dict()
    epoch = 0
    if idist.get_rank() == 0 and best.last_checkpoint is not None:
        checkpoint = safe_torch_load(best.save_handler.dirname / best.last_checkpoint, "best checkpoint")
        state, progress = checkpoint["model"], checkpoint["trainer"]
        epoch = progress["iteration"] // progress["epoch_length"]
    for name, tensor in model.state_dict().items():
        tensor.copy_(idist.broadcast(state[name].to(tensor.device), src=0))
    return int(idist.broadcast(epoch, src=0))


def export_examples(run_dir: Path, splits: Splits) -> None:
    """One test image per class, for the demo's clickable examples."""
    from torchvision.utils import save_image

    folder = run_dir / "examples"
    folder.mkdir(exist_ok=True)
    images, labels = splits.test
    for index, name in enumerate(CLASS_NAMES):
        first = int((labels == index).nonzero()[0])
        save_image(denormalise(images[first]), folder / f"{index}_{name.replace('/', '-')}.png")


def training(local_rank: int, cfg: DictConfig, outcome: dict) -> None:
    rank = idist.get_rank()
    logger = setup_logger("trainer", level=logging.INFO if rank == 0 else logging.WARNING, format="%(asctime)s %(message)s")
    manual_seed(cfg.seed)
    splits, train_loader, val_loader, test_loader = get_dataflow(cfg)
    model, optimizer, loss_fn, lr_scheduler = initialize(cfg, len(train_loader))
    device = idist.device()

    trainer = create_trainer(model, optimizer, loss_fn, lr_scheduler, train_loader, cfg, device)
    evaluator = create_evaluator(model, loss_fn, device)
    final_val = create_evaluator(model, loss_fn, device)
    final_test = create_evaluator(model, loss_fn, device, num_classes=len(CLASS_NAMES))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: evaluator.run(val_loader))
    evaluator.add_event_handler(Events.COMPLETED, lambda: log_epoch(logger, trainer, evaluator, optimizer))

    run_dir = prepare_run_dir(cfg) if rank == 0 else None
    to_save = {"model": model, "optimizer": optimizer, "lr_scheduler": lr_scheduler, "trainer": trainer}
    if cfg.train.early_stopping_patience > 0:
        to_save["early_stopping"] = EarlyStopping(
            cfg.train.early_stopping_patience, Checkpoint.get_default_score_fn("accuracy"), trainer
        )
        evaluator.add_event_handler(Events.COMPLETED, to_save["early_stopping"])
    best, last = create_checkpoints(run_dir / "checkpoints" if run_dir else Path("."), to_save, trainer)
    if rank == 0:
        evaluator.add_event_handler(Events.COMPLETED, best)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, last)
        ProgressBar(persist=False).attach(trainer, output_transform=lambda loss: {"loss": loss})
    views = None
    if rank == 0 and cfg.tensorboard.enabled:
        from trainer.handlers.tensorboard import TensorBoardViews

        views = TensorBoardViews(cfg, run_dir, model, splits, CLASS_NAMES)
        every = cfg.log.every or max(1, len(train_loader) // 10)
        views.attach(trainer, evaluator, final_val, final_test, optimizer, every)
    stop = GracefulStop()
    stop.install()
    stop.attach(trainer)

    if cfg.resume:
        load_checkpoint(cfg.resume, {**to_save, "best_checkpoint": best})
        if trainer.state.epoch_length != len(train_loader):
            raise CheckpointError(
                f"checkpoint {cfg.resume} was made with {trainer.state.epoch_length} iterations per epoch, this config "
                f"gives {len(train_loader)}: resume with the same train.batch_size, data.val_size and process count"
            )
        if trainer.state.iteration >= cfg.train.max_epochs * len(train_loader):
            raise CheckpointError(
                f"checkpoint {cfg.resume} has already run {trainer.state.epoch} epochs: set train.max_epochs higher to go on"
            )
        logger.info(f"Resuming from {cfg.resume} at epoch {trainer.state.epoch}, iteration {trainer.state.iteration}")

    logger.info(f"Training {cfg.model.name} on {device} for {cfg.train.max_epochs} epochs; run directory {run_dir}")
    started = time.perf_counter()
    trainer.run(train_loader, max_epochs=cfg.train.max_epochs)
    train_seconds = time.perf_counter() - started

    if stop.requested:
        if rank == 0:
            last(trainer)
            if views:
                views.close()
            checkpoint = run_dir / "checkpoints" / last.last_checkpoint
            logger.info(f"Stopped at iteration {trainer.state.iteration}; checkpoint {checkpoint}")
            logger.info(f"Resume with: python -m trainer.main --config {outcome['config']} resume={checkpoint}")
        outcome["exit_code"] = stop.exit_code
        return

    best_epoch = load_best_weights(model, best)
    final_val.run(val_loader)
    final_test.run(test_loader)
    if rank == 0:
        finish_run(cfg, run_dir, model, splits, final_val, final_test, trainer, best_epoch, train_seconds)
        if views:
            views.close()
        logger.info(f"Run directory {run_dir}: test accuracy {final_test.state.metrics['accuracy']:.4f}")
    outcome["exit_code"] = 0


def finish_run(cfg, run_dir, model, splits, final_val, final_test, trainer, best_epoch, train_seconds) -> None:
    """Write what outlives the run: `model.pt`, `metrics.json` and the demo's examples."""
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
        "epochs_run": trainer.state.epoch,
        "train_seconds": round(train_seconds, 2),
    }
    bare = getattr(model, "module", model)
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
            "epoch": best_epoch,
            "versions": {"torch": torch.__version__, "ignite": ignite.__version__},
        },
    )
    atomic_write_json(metrics, run_dir / "metrics.json")
    export_examples(run_dir, splits)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    outcome = {"exit_code": 1, "config": args.config}
    try:
        cfg = load_config(args.config, args.overrides)
        with idist.Parallel(backend=cfg.dist.backend, nproc_per_node=cfg.dist.nproc_per_node if cfg.dist.backend else None) as parallel:
            parallel.run(training, cfg, outcome)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: stopped by the user before a checkpoint could be written", file=sys.stderr)
        return 130
    return outcome["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
