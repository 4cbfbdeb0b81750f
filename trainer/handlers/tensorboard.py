"""TensorBoard views of a run, as Ignite handlers: all the PyTorch "TensorBoard support" tutorial shows, and more.

Everything goes through one `SummaryWriter` (Ignite's `TensorboardLogger`) into the run directory, so
`tensorboard --logdir runs` lists one run per training run; `add_scalars` adds its `loss_train` and
`loss_validation` sub-runs for the train-vs-validation chart. The Projector's files are written next to them
by `trainer.handlers.projector`. Only rank 0 creates this object.
"""

import functools
import time
import warnings
from pathlib import Path
from typing import Any, Callable, TypeVar

import ignite.distributed as idist
import torch
import torch.nn as nn
import torch.nn.functional as F
from ignite.engine import Engine, Events
from ignite.handlers import EpochOutputStore, TensorboardLogger, global_step_from_engine
from ignite.handlers.tensorboard_logger import GradsHistHandler, WeightsHistHandler
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from trainer.checkpoint import continues_in
from trainer.config import to_yaml
from trainer.data import BLACK, EVAL_BATCH_SIZE, Splits, denormalise
from trainer.engines import unwrap
from trainer.handlers.figures import confusion_matrix_figure, explained_figure, image_grid_figure
from trainer.handlers.projector import Projector

T = TypeVar("T")
# model.kwargs and the augmentation's share tell the presets apart (default.yaml from wide.yaml, lenet.yaml from lenet32.yaml)
HPARAM_KEYS = ("model.name", "model.kwargs", "train.optimizer", "train.lr", "train.batch_size", "train.max_epochs",
               "train.weight_decay", "train.augment.p", "train.export", "seed")


def hparam_values(cfg: DictConfig) -> dict[str, int | float | str]:
    """The HPARAM_KEYS of a run as the HParams tab takes them (`hparam_value`)."""
    return {key: hparam_value(OmegaConf.select(cfg, key)) for key in HPARAM_KEYS}


def hparam_value(value: Any) -> int | float | str:
    """A value as the HParams tab takes it: a mapping as one text, `conv1=16, conv2=48`; true and false as text, which
    torch's writer would store as the numbers 1 and 0; anything else that is not a number or a text (a study's `null`
    choice) as its text, which torch's writer would otherwise leave out."""
    if isinstance(value, DictConfig):
        return ", ".join(f"{k}={hparam_value(v)}" for k, v in value.items()) or "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, (int, float, str)) else str(value)


def timed(method: Callable[..., T]) -> Callable[..., T]:
    """Adds the method's wall time to `self.seconds`: what the views cost a run, which the run reports at its end."""

    @functools.wraps(method)
    def wrapper(self: "TensorBoardViews", *args: Any, **kwargs: Any) -> T:
        start = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    return wrapper


def write_hparams(writer: SummaryWriter, values: dict, metrics: dict[str, float | None], step: int | None = None) -> None:
    """HParams written into the run's own event file (not `add_hparams`' extra sub-run), for the HParams tab; a
    metric without a value (a failed trial's) is named, so every run has the same columns, but has no point."""
    for summary in hparams(values, metrics):  # only the metrics' names go into these
        writer._get_file_writer().add_summary(summary)
    for tag, value in metrics.items():
        if value is not None:
            writer.add_scalar(tag, value, step)


def most_confident_mistakes(y: torch.Tensor, probs: torch.Tensor, n: int = 16) -> torch.Tensor:
    """Indices of the `n` wrong predictions made with the highest confidence, most confident first."""
    conf, pred = probs.max(1)
    wrong = (pred != y).nonzero().flatten()
    return wrong[conf[wrong].argsort(descending=True)[:n]]


class TensorBoardViews:
    def __init__(
        self, cfg: DictConfig, run_dir: Path, model: nn.Module, tested: nn.Module, loss_fn: nn.Module, splits: Splits,
        class_names: list[str],
    ) -> None:
        """`model` is the network being trained (graph, histograms); `tested` the weights the evaluators test and
        the run exports (the trained network itself, or its moving average), behind every validation view; `loss_fn`
        the training loss, label smoothing and all, so that the training and validation curves measure the same."""
        self.cfg, self.views, self.loss_fn = cfg, cfg.tensorboard, loss_fn
        self.model, self.tested, self.splits, self.class_names = unwrap(model), unwrap(tested), splits, class_names
        self.seconds = 0.0
        self.run_dir = run_dir
        self.tb = TensorboardLogger(log_dir=str(run_dir))
        self.writer = self.tb.writer
        n = min(self.views.embedding_samples, len(splits.test[1]))
        pick = torch.randperm(len(splits.test[1]), generator=torch.Generator().manual_seed(cfg.seed))[:n]
        self.embedded = splits.test[0][pick]
        self.projector = Projector(run_dir, denormalise(self.embedded), [class_names[i] for i in splits.test[1][pick]])
        self.test_outputs: EpochOutputStore | None = None

    def attach(
        self, trainer: Engine, evaluator: Engine, final_val: Engine, final_test: Engine, optimizer: torch.optim.Optimizer, every: int
    ) -> None:
        """All handlers in one place: what is logged, on which engine, at which event."""
        self.trainer = trainer
        self.tb.attach_output_handler(trainer, Events.EPOCH_COMPLETED, tag="training", metric_names=["loss"])
        self.tb.attach_output_handler(
            evaluator, Events.COMPLETED, tag="validation", metric_names=["loss", "accuracy"],
            global_step_transform=global_step_from_engine(trainer),
        )
        self.tb.attach_opt_params_handler(trainer, Events.ITERATION_COMPLETED(every=every), optimizer)
        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=every), self.log_train_vs_val_loss)
        trainer.add_event_handler(Events.STARTED, self.log_start_views)
        evaluator.add_event_handler(Events.COMPLETED, self.flush)
        if self.views.histograms:
            self.tb.attach(trainer, WeightsHistHandler(self.model), Events.EPOCH_COMPLETED)
            self.tb.attach(trainer, GradsHistHandler(self.model), Events.ITERATION_COMPLETED(every=every))
        if idist.get_world_size() == 1:  # this process tests every test image: the end views reuse its outputs
            self.test_outputs = EpochOutputStore(output_transform=lambda output: output[0])
            self.test_outputs.attach(final_test)
        final_test.add_event_handler(Events.COMPLETED, self.log_end_views, final_val)

    @timed
    def log_train_vs_val_loss(self, trainer: Engine) -> None:
        """The tutorial's chart: running training loss and validation loss (of the tested weights) at the same steps."""
        x, y = self.splits.val[0][: self.cfg.log.val_subset], self.splits.val[1][: self.cfg.log.val_subset]
        device = next(self.tested.parameters()).device
        self.tested.eval()
        with torch.inference_mode():
            val_loss = self.loss_fn(self.tested(x.to(device)), y.to(device)).item()
        scalars = {"train": trainer.state.metrics["recent_loss"], "validation": val_loss}
        self.writer.add_scalars("loss", scalars, trainer.state.iteration)

    @timed
    def log_start_views(self, trainer: Engine) -> None:
        if continues_in(self.cfg.resume, self.run_dir):  # resumed in place: these were written when the run started
            return
        if self.views.config_text:
            self.writer.add_text("config", "```yaml\n" + to_yaml(self.cfg) + "\n```")
        images, labels = self.splits.train[0][:32], self.splits.train[1][:32]
        if self.views.images:
            shown = denormalise(images)
            # TensorBoard tiles a batch 8 to a row; a white pixel round each image keeps them apart
            self.writer.add_images("train/images", F.pad(shown, (1, 1, 1, 1), value=1.0))
            titles = [self.class_names[i] for i in labels]
            self.writer.add_figure("train/images_labelled", image_grid_figure(shown, titles, title="Training images"))
            self.writer.flush()
        if self.views.graph:
            with warnings.catch_warnings():  # add_graph traces with torch.jit, which now warns it is deprecated
                warnings.simplefilter("ignore", FutureWarning)
                self.writer.add_graph(self.model, images.to(next(self.model.parameters()).device))
            self.writer.flush()
        if self.views.embeddings:
            self.log_pixel_embedding()

    def log_pixel_embedding(self) -> None:
        # Pixels as 0-255 integers: the same geometry for PCA and t-SNE as [0, 1] floats, in a fifth of the text.
        self.projector.add("pixels", self.projector.intensities.flatten(1), fmt="%d")

    @timed
    def log_end_views(self, final_test: Engine, final_val: Engine) -> None:
        """On the test set, with the best model: PR curves, confusion matrix, predictions, mistakes, features."""
        step = self.trainer.state.epoch
        device = next(self.tested.parameters()).device
        self.tested.eval()
        x, y = self.splits.test
        if self.views.eval_views or self.views.explanations:
            probs = F.softmax(self.test_logits(x, device), 1)
            worst = most_confident_mistakes(y, probs)  # none on a test set the model gets all right: nothing to show
        if self.views.eval_views:
            for i, name in enumerate(self.class_names):
                self.writer.add_pr_curve(f"pr_curve/{name}", y == i, probs[:, i], step)
            cm = final_test.state.metrics["confusion"].cpu().numpy()
            self.writer.add_figure("test/confusion_matrix", confusion_matrix_figure(cm, self.class_names), step)
            self.writer.add_figure("test/predictions_vs_actuals", self.predictions_figure(x, y, probs), step)
            if len(worst):
                self.writer.add_figure("test/most_confident_mistakes", self.mistakes_figure(x, y, probs, worst), step)
            self.writer.flush()
        if self.views.explanations and len(worst):
            self.writer.add_figure("test/mistakes_explained", self.mistakes_explained_figure(x, y, probs, worst, device), step)
            self.writer.flush()
        if self.views.embeddings:
            if not self.projector.config.embeddings:  # resumed: this process has not listed the pixels yet
                self.log_pixel_embedding()
            with torch.inference_mode():
                self.projector.add("features", self.tested.features(self.embedded.to(device)))
        if self.views.hparams:
            self.log_hparams(final_val.state.metrics["accuracy"], final_test.state.metrics["accuracy"])
        self.writer.flush()

    def test_logits(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The final test's own outputs, in test-set order; a forward pass of its own where this process tested only
        its shard of the test set (a distributed run)."""
        if self.test_outputs is not None:
            return torch.cat(self.test_outputs.data).cpu()
        with torch.inference_mode():
            return torch.cat([self.tested(batch.to(device)).cpu() for batch in x.split(EVAL_BATCH_SIZE)])

    def predictions_figure(self, x: torch.Tensor, y: torch.Tensor, probs: torch.Tensor) -> Figure:
        """The tutorial's `plot_classes_preds`: predicted class and its probability, green if right, red if wrong."""
        pick = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.cfg.seed))[:16]
        conf, pred = probs[pick].max(1)
        titles = [self.answer(p, c, t) for p, c, t in zip(pred, conf, y[pick])]
        colors = ["green" if p == t else "red" for p, t in zip(pred, y[pick])]
        return image_grid_figure(denormalise(x[pick]), titles, colors, title="Predictions vs. actuals")

    def answer(self, predicted: torch.Tensor, confidence: torch.Tensor, label: torch.Tensor) -> str:
        """A tile's title: the answer, how sure, and the label."""
        return f"{self.class_names[predicted]}, {confidence:.0%}\n(label: {self.class_names[label]})"

    def mistakes_figure(self, x: torch.Tensor, y: torch.Tensor, probs: torch.Tensor, worst: torch.Tensor) -> Figure:
        conf, pred = probs.max(1)
        titles = [self.answer(pred[i], conf[i], y[i]) for i in worst]
        return image_grid_figure(denormalise(x[worst]), titles, ["red"] * len(worst), title="Most confident mistakes")

    def mistakes_explained_figure(
        self, x: torch.Tensor, y: torch.Tensor, probs: torch.Tensor, worst: torch.Tensor, device: torch.device
    ) -> Figure:
        """The same mistakes, each beside the evidence (trainer.attribution) for the class the model chose and for the
        true one: what misled it, and what it overlooked."""
        from trainer.attribution import attribute  # Captum takes about 0.4 s to import: paid, and timed, only with this view

        conf, pred = probs.max(1)
        tiles, targets = torch.cat([x[worst]] * 2).to(device), torch.cat([pred[worst], y[worst]]).to(device)
        for_predicted, for_true = attribute(self.tested, tiles, targets, BLACK).cpu().chunk(2)
        titles = [
            (self.answer(pred[i], conf[i], y[i]), f"for {self.class_names[pred[i]]}", f"for {self.class_names[y[i]]}")
            for i in worst
        ]
        return explained_figure(denormalise(x[worst]), for_predicted, for_true, titles, "Most confident mistakes: evidence "
                                "for the predicted class and for the true one (orange for, blue against)")

    def log_hparams(self, val_accuracy: float, test_accuracy: float) -> None:
        metrics = {"hparams/val_accuracy": val_accuracy, "hparams/test_accuracy": test_accuracy}
        write_hparams(self.writer, hparam_values(self.cfg), metrics, self.trainer.state.iteration)  # the run's last step, as calibration/*

    @timed
    def log_calibration(self, metrics: dict) -> None:
        """How far confidence is from accuracy, on the test set and (when measured) on real photos, with the
        photos' accuracy: written once the run's model is exported, since they are measured on `model.pt`."""
        step = self.trainer.state.iteration
        calibration = metrics["calibration"]
        self.writer.add_scalar("calibration/test_ece", calibration["test_ece"], step)
        self.writer.add_scalar("calibration/test_ece_uncalibrated", calibration["test_ece_uncalibrated"], step)
        self.writer.add_scalar("calibration/temperature", calibration["temperature"], step)
        photos = metrics.get("real_photos")
        if photos:
            self.writer.add_scalar("real_photos/macro_top1", photos["macro_top1"], step)
            self.writer.add_scalar("real_photos/macro_top3", photos["macro_top3"], step)
            if photos["confidence"]["ece"] is not None:  # None when every photo was refused
                self.writer.add_scalar("real_photos/ece", photos["confidence"]["ece"], step)
            self.writer.add_scalar("real_photos/sure_share", photos["sure"]["share"], step)
        self.writer.flush()

    @timed
    def flush(self, _: Engine | None = None) -> None:
        self.writer.flush()

    @timed
    def close(self) -> None:
        self.tb.close()

