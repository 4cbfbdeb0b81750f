"""Ignite engines: the trainer (with its LR schedule and loss metrics) and the evaluators."""

import logging
import math
from collections.abc import Callable
from functools import partial

import ignite.distributed as idist
import torch
import torch.nn as nn
from ignite.engine import Engine, Events, create_supervised_evaluator, create_supervised_trainer
from ignite.handlers import EMAHandler, PiecewiseLinear
from ignite.metrics import Accuracy, Average, ConfusionMatrix, Loss, Metric
from ignite.metrics.metric import MetricUsage
from omegaconf import DictConfig

from trainer.data import InMemoryLoader
from trainer.errors import UserError


class TrainingDiverged(UserError):
    """A loss that is no longer finite: the weights are lost, so the run stops without exporting them."""


def unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside a DistributedDataParallel wrapper, if any: what checkpoints and views hold."""
    return getattr(model, "module", model)


def create_optimizer(model: nn.Module, cfg: DictConfig) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=t.lr, momentum=t.momentum, nesterov=t.nesterov and t.momentum > 0, weight_decay=t.weight_decay
    )


def create_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: DictConfig, epoch_length: int) -> PiecewiseLinear:
    """One cycle: linear warm-up to `train.lr`, then linear decay towards zero, which it reaches one step after the
    last iteration (the last step trains at `train.lr` / remaining steps, not at zero)."""
    total = cfg.train.max_epochs * epoch_length
    warmup = min(int(cfg.train.warmup_epochs * epoch_length), total - 1)
    milestones = [(0, cfg.train.lr / 10), (warmup, cfg.train.lr), (total, 0.0)] if warmup > 0 else [(0, cfg.train.lr), (total, 0.0)]
    return PiecewiseLinear(optimizer, param_name="lr", milestones_values=milestones)


class FusedEMAHandler(EMAHandler):
    """Ignite's `EMAHandler`, updating all floating-point tensors in one `torch._foreach_lerp_` call.

    Ignite's update runs two small ops per tensor: 0.3 ms for LeNet-5's ten, against 0.03 ms fused. Other
    tensors (BatchNorm's batch count) are copied, as Ignite's `handle_buffers="update"` does.
    """

    def __init__(self, model: nn.Module, momentum: float) -> None:
        super().__init__(model, momentum=momentum, handle_buffers="update")
        pairs = list(zip(self.ema_model.state_dict().values(), self.model.state_dict().values()))
        self.averaged = [pair for pair in pairs if pair[0].is_floating_point()]
        self.copied = [pair for pair in pairs if not pair[0].is_floating_point()]

    def _update_ema_model(self, engine: Engine, name: str) -> None:
        momentum = getattr(engine.state, name)
        if self.averaged:
            averages, currents = zip(*self.averaged)
            torch._foreach_lerp_(averages, currents, momentum)
        for average, current in self.copied:
            average.copy_(current)


def attach_ema(trainer: Engine, model: nn.Module, decay: float, every: int = 4) -> EMAHandler | None:
    """An exponential moving average of the weights over about 1 / (1 - decay) steps, or None with decay 0.

    The average is what gets validated, kept as the best checkpoint and exported: it smooths out the noise of a
    high learning rate, so it reaches a given test accuracy epochs earlier than the raw weights do. It is updated
    every `every` steps with the same span.
    """
    if decay == 0:
        return None
    ema = FusedEMAHandler(model, momentum=1 - decay**every)  # momentum: the new weights' share

    @trainer.on(Events.ITERATION_COMPLETED(every=every))
    def warm_up(engine: Engine) -> None:
        # As TensorFlow's ExponentialMovingAverage(num_updates=step): at step t the average spans at most about
        # t / 10 steps, so a short run is not averaged with its random start. A function of the step alone, so a
        # resumed run averages exactly as an uninterrupted one.
        step = engine.state.iteration
        engine.state.ema_momentum = 1 - min(decay, (1 + step) / (10 + step)) ** every

    ema.attach(trainer, name="ema_momentum", event=Events.ITERATION_COMPLETED(every=every))  # after warm_up
    return ema


def create_trainer(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    lr_scheduler: PiecewiseLinear,
    train_loader: InMemoryLoader,
    cfg: DictConfig,
    device: torch.device,
    log_every: int,
) -> Engine:
    """Metrics on the trainer: `loss` averaged over the epoch, `recent_loss` over the last `log_every` iterations.

    Both are attached on every rank: Ignite metrics all-reduce when computed, so all ranks must compute them.
    """
    amp = device.type == "cuda" and cfg.train.amp
    bf16 = trains_in_bf16(cfg, device)  # bf16 needs no loss scaling; older GPUs get fp16 with a scaler
    trainer = create_supervised_trainer(
        model, optimizer, loss_fn, device=device, non_blocking=True,
        amp_mode="amp" if amp and not bf16 else None, scaler=amp and not bf16,
        model_fn=training_forward(bf16, device.type),
    )

    @trainer.on(Events.EPOCH_STARTED)
    def place_data_and_seed(engine: Engine) -> None:
        # After a resume in mid-epoch, Ignite continues at iteration % epoch_length: the loader must skip as far.
        train_loader.set_epoch(engine.state.epoch, engine.state.iteration % engine.state.epoch_length)
        torch.manual_seed(cfg.seed * 100_003 + engine.state.epoch)  # dropout and augmentation, per epoch

    trainer.add_event_handler(Events.ITERATION_STARTED, lr_scheduler)

    @trainer.on(Events.ITERATION_COMPLETED)
    def stop_if_diverged(engine: Engine) -> None:
        # Not Ignite's TerminateOnNan: it turns the loss into a tensor to test it (0.14 ms a step, 1.5% of an epoch
        # here), and it ends the run as if it had finished, exporting whatever weights there are.
        if not math.isfinite(engine.state.output):
            raise TrainingDiverged(
                f"the training loss became {engine.state.output} at iteration {engine.state.iteration}: the run diverged; "
                f"lower train.lr (now {cfg.train.lr}) and start again"
            )

    Average(output_transform=lambda loss: loss).attach(trainer, "loss")
    window = MetricUsage(
        started=Events.ITERATION_STARTED(event_filter=lambda _, i: (i - 1) % log_every == 0),
        completed=Events.ITERATION_COMPLETED(every=log_every),
        iteration_completed=Events.ITERATION_COMPLETED,
    )
    Average(output_transform=lambda loss: loss).attach(trainer, "recent_loss", usage=window)
    return trainer


def trains_in_bf16(cfg: DictConfig, device: torch.device) -> bool:
    """Whether the training forward pass runs under bf16 autocast: on CUDA with `train.amp` where the GPU has bf16,
    on a CPU with `train.cpu_bf16` where it has native bf16 (said in the log where it has not)."""
    if device.type == "cuda":
        return cfg.train.amp and torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not cfg.train.cpu_bf16:
        return False
    native = cpu_has_bf16()
    if not native and idist.get_rank() == 0:
        logging.getLogger("trainer").warning("train.cpu_bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), so the run trains in fp32")
    return native


def training_forward(bf16: bool, device_type: str) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """`model_fn(model, x)` for the training step: under bf16 autocast or plain."""
    return partial(bf16_forward, device_type=device_type) if bf16 else lambda m, x: m(x)


def bf16_forward(model: nn.Module, x: torch.Tensor, device_type: str) -> torch.Tensor:
    with torch.autocast(device_type, dtype=torch.bfloat16):
        return model(x).float()


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 natively here (AVX512-BF16 or AMX): elsewhere bf16 is emulated, slower than fp32."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def create_evaluator(model: nn.Module, loss_fn: nn.Module, device: torch.device, num_classes: int | None = None) -> Engine:
    """Accuracy and loss; with `num_classes`, also the confusion matrix that per-class accuracy comes from."""
    metrics: dict[str, Metric] = {"accuracy": Accuracy(), "loss": Loss(loss_fn)}
    if num_classes is not None:
        metrics["confusion"] = ConfusionMatrix(num_classes=num_classes)
    return create_supervised_evaluator(model, metrics=metrics, device=device, non_blocking=True)
