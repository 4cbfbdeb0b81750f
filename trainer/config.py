"""Typed configuration: dataclasses as the schema, YAML files for presets, dotted command-line overrides.

OmegaConf does the merging and type checking; this module only adds the range checks it cannot express.
"""

import math
import os
import re
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Optional, get_type_hints

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainer.errors import UserError

FASHION_MNIST_TRAIN_SIZE = 60_000
MAX_SEED = 10**9  # a bound a user will not meet; the loader's per-batch seeds derived from it wrap at 63 bits
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
# OmegaConf raises a plain TypeError for a list where a mapping belongs (`model.kwargs=[1]`), and the reverse
MERGE_ERRORS = (OmegaConfBaseException, TypeError, ValueError)


class ConfigError(UserError):
    pass


@dataclass
class DataConfig:
    root: str = field(default_factory=lambda: os.environ.get("FASHION_MNIST_ROOT", "data"))
    download: bool = True
    val_size: int = 5000
    photos: Optional[str] = None  # real photos measured at the end of a run; null: <root>/realphotos when it is there
    measure_photos: bool = True


@dataclass
class ModelConfig:
    name: str = "lenet5"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class AugmentConfig:
    """Per-image photo-robust augmentations (trainer/augment.py); `p` is the share of images transformed."""

    p: float = 0.0
    rotate: float = 0.0
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])
    aspect: list[float] = field(default_factory=lambda: [1.0, 1.0])
    shear: float = 0.0
    translate: float = 0.0  # the largest shift, in half-tiles as grid_sample counts (0.1: up to 1.4 pixels)
    gamma: list[float] = field(default_factory=lambda: [1.0, 1.0])  # the warped images' grey levels to this power (below 1: brighter)
    contrast: list[float] = field(default_factory=lambda: [1.0, 1.0])  # and times this, clipped at white (flatter light parts)
    texture: float = 0.0
    blur: float = 0.0
    footwear_from_above: float = 0.0  # share of shoes turned upright, alone or as a pair, as photos show them
    sleeves_spread: float = 0.0  # share of tops (T-shirts, pullovers, coats, shirts) with their sleeves raised, as laid flat
    erase: float = 0.0  # share of images with a random rectangle replaced by noise (random erasing; measured no help: docs/search.md)


@dataclass
class TrainConfig:
    max_epochs: int = 16
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    ema_decay: float = 0.995
    hflip: bool = True
    hflip_footwear: bool = True  # false: shoes never flipped, where every one faces the same way (Fashion-MNIST's)
    max_shift: int = 0
    early_stopping_patience: int = 0
    export: str = "best"  # the weights tested and exported: the best validation epoch's, or the last epoch's
    amp: bool = True  # on CUDA: bf16 autocast, or fp16 with a gradient scaler where the GPU has no bf16
    cpu_bf16: bool = False  # on a CPU with native bf16: bf16 autocast (configs/strong.yaml; docs/search.md)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class CalibrationConfig:
    photo_factor: float = 1.2  # photos' temperature = the validation-fitted one x this (chosen on real photos)


@dataclass
class LogConfig:
    every: Optional[int] = None
    val_subset: int = 256


@dataclass
class TensorBoardConfig:
    enabled: bool = True
    images: bool = True
    graph: bool = True
    embeddings: bool = True
    embedding_samples: int = 1000
    eval_views: bool = True
    hparams: bool = True
    config_text: bool = True
    histograms: bool = False
    explanations: bool = True


@dataclass
class OutputConfig:
    root: str = "runs"


@dataclass
class RunConfig:
    name: Optional[str] = None


@dataclass
class DistConfig:
    backend: Optional[str] = None
    nproc_per_node: int = 1


@dataclass
class Config:
    seed: int = 0
    device: str = "auto"
    resume: Optional[str] = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    log: LogConfig = field(default_factory=LogConfig)
    tensorboard: TensorBoardConfig = field(default_factory=TensorBoardConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    run: RunConfig = field(default_factory=RunConfig)
    dist: DistConfig = field(default_factory=DistConfig)


def load_config(path: str | Path = DEFAULT_CONFIG, overrides: list[str] = ()) -> DictConfig:
    """Schema <- YAML file <- `key.sub=value` overrides, checked for unknown keys, types and ranges."""
    path = Path(path)
    from_files = read_config_file(path)
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} must look like key.sub=value")
    cfg = from_files
    try:
        for item in overrides:
            cfg = apply_override(cfg, item)
    except MERGE_ERRORS as exc:
        raise ConfigError(_describe(exc, "the command line")) from None
    try:  # an ${interpolation}, from a file or the command line, is resolved and checked once, here
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(_describe(exc, "an ${...} interpolation")) from None
    check_ranges(cfg)
    return cfg


def apply_override(cfg: DictConfig, item: str) -> DictConfig:
    """`key=value` merged as OmegaConf reads it, except where that surprises: a string key (a name, a path) keeps
    the text as typed, which YAML would change (`run.name=0101` read as the number 65, `try #2` cut at its comment,
    `[draft]` taken for a list), and a mapping given for `model.kwargs` replaces the file's rather than merging into
    it (`model.name=small_cnn model.kwargs={}` drops the default's LeNet-5 arguments)."""
    key, text = item.split("=", 1)
    if key in STRING_KEYS:
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":  # quoted, as YAML would take it: the text inside
            text = text[1:-1]
        elif text in ("", "~", "null", "Null", "NULL"):
            text = None
        given = OmegaConf.create()
        OmegaConf.update(given, key, text)
        return OmegaConf.merge(cfg, given)
    try:
        given = OmegaConf.from_dotlist([item])
    except yaml.YAMLError as exc:  # the value is read as YAML: `[0.8, 1.1` is an unclosed list, `*x` an alias
        problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
        raise ConfigError(f"override {item!r} is not a valid YAML value ({problem}): close its brackets, or quote it") from None
    value = OmegaConf.select(given, key, throw_on_resolution_failure=False)
    node = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
    if isinstance(value, DictConfig) and isinstance(node, DictConfig) and OmegaConf.get_type(node) is dict:
        OmegaConf.update(cfg, key, value, merge=False)
        return cfg
    return OmegaConf.merge(cfg, given)


def string_keys(schema: type = Config, prefix: str = "") -> set[str]:
    """The schema's dotted keys that hold text."""
    keys = set()
    for name, kind in get_type_hints(schema).items():
        if is_dataclass(kind):
            keys |= string_keys(kind, f"{prefix}{name}.")
        elif kind in (str, Optional[str]):
            keys.add(f"{prefix}{name}")
    return keys


STRING_KEYS = string_keys()


def read_config_file(path: Path, inside: tuple[Path, ...] = ()) -> DictConfig:
    """The schema, then the file its `base:` names (a path relative to it), then this file, each merged and checked
    in turn, so that a mistake names the file that holds it, and a preset which differs from another in a few keys
    says only those (`configs/lenet32.yaml`)."""
    from_file = read_yaml(path, "config file")
    if from_file is None:
        from_file = {}
    if not isinstance(from_file, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    base = from_file.pop("base", None)
    if base is None:
        under = OmegaConf.structured(Config)
    else:
        if not isinstance(base, str):
            raise ConfigError(f"config file {path}: base must name another config file, relative to this one")
        inside = (*inside, path.resolve())
        base_path = path.parent / base
        if base_path.resolve() in inside:
            raise ConfigError(f"config file {path}: its base {base} already leads to it (a loop of bases)")
        under = read_config_file(base_path, inside)
    try:
        return OmegaConf.merge(under, from_file)
    except MERGE_ERRORS as exc:
        raise ConfigError(_describe(exc, str(path))) from None


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading `1e-4` and `1.0e5` as numbers, as OmegaConf's parser of overrides and YAML 1.2
    do: PyYAML (YAML 1.1) reads them as text, which the schema's float keys would convert but `model.kwargs` and a
    search space would not."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def read_yaml(path: Path, what: str) -> Any:
    """The YAML in `path`, or a ConfigError that names the file as `what` and says what is wrong with it."""
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        return yaml.load(path.read_text(), Loader=YamlLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} is not valid YAML ({type(exc).__name__})") from None


def _describe(exc: Exception, source: str) -> str:
    """One sentence for a failed merge, naming where the keys came from: a config file, or the command line."""
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    message = str(exc).strip().splitlines()[0]
    if "not in struct" in message or "Key '" in message and "not in" in message:
        return f"unknown config key {key!r} (from {source})"
    if key:
        return f"bad value for config key {key!r}: {message}"
    if isinstance(exc, TypeError):  # OmegaConf names no key for these
        return f"invalid config from {source}: a list given where a mapping belongs, or the reverse ({message})"
    return f"invalid config from {source}: {message}"


def check_ranges(cfg: DictConfig) -> None:
    problems = [f"{key} must be a finite number (got {value})" for key, value in non_finite(cfg)]
    if problems:  # every comparison below would be meaningless with a nan in it
        raise ConfigError("; ".join(problems))
    if not 0 <= cfg.seed <= MAX_SEED:
        problems.append(f"seed must be between 0 and {MAX_SEED} (got {cfg.seed})")
    if cfg.train.lr <= 0:
        problems.append(f"train.lr must be positive (got {cfg.train.lr})")
    if cfg.train.max_epochs < 1:
        problems.append(f"train.max_epochs must be at least 1 (got {cfg.train.max_epochs})")
    if cfg.train.batch_size < 1:
        problems.append(f"train.batch_size must be at least 1 (got {cfg.train.batch_size})")
    if not 1 <= cfg.data.val_size < FASHION_MNIST_TRAIN_SIZE:
        problems.append(
            f"data.val_size must be between 1 and {FASHION_MNIST_TRAIN_SIZE - 1} (got {cfg.data.val_size})"
        )
    elif cfg.train.batch_size > FASHION_MNIST_TRAIN_SIZE - cfg.data.val_size:
        problems.append(f"train.batch_size={cfg.train.batch_size} is larger than the training set")
    if cfg.train.weight_decay < 0 or cfg.train.warmup_epochs < 0:
        problems.append("train.weight_decay and train.warmup_epochs must not be negative")
    if not 0 <= cfg.train.momentum < 1:  # at 1 or more the velocity never decays and the steps grow without bound
        problems.append(f"train.momentum must be at least 0 and below 1 (got {cfg.train.momentum})")
    if cfg.train.warmup_epochs > cfg.train.max_epochs >= 1:  # as long as the run: a one-epoch smoke run, allowed
        problems.append(
            f"train.warmup_epochs={cfg.train.warmup_epochs} is longer than train.max_epochs={cfg.train.max_epochs}: "
            "the learning rate would rise for the whole run and never decay"
        )
    if not 0 <= cfg.train.label_smoothing < 1:
        problems.append(f"train.label_smoothing must be at least 0 and below 1 (got {cfg.train.label_smoothing})")
    if not 0 <= cfg.train.ema_decay < 1:
        problems.append(f"train.ema_decay must be at least 0 (0 turns it off) and below 1 (got {cfg.train.ema_decay})")
    if cfg.train.optimizer not in ("sgd", "adamw"):
        problems.append(f"train.optimizer must be sgd or adamw (got {cfg.train.optimizer!r})")
    if not 0 <= cfg.train.max_shift <= 8:
        problems.append(f"train.max_shift must be between 0 and 8 pixels (got {cfg.train.max_shift})")
    problems += augment_problems(cfg.train.augment)
    if not 0.1 <= cfg.calibration.photo_factor <= 10:
        problems.append(f"calibration.photo_factor must be between 0.1 and 10 (got {cfg.calibration.photo_factor})")
    if cfg.train.export not in ("best", "last"):
        problems.append(f"train.export must be best or last (got {cfg.train.export!r})")
    elif cfg.train.export == "last" and cfg.train.early_stopping_patience > 0:  # it stops before the schedule's end
        problems.append(
            "train.export=last exports the weights the schedule ends with, which early stopping never reaches: "
            "set train.early_stopping_patience=0 or train.export=best"
        )
    if cfg.train.early_stopping_patience < 0:
        problems.append("train.early_stopping_patience must not be negative (0 turns it off)")
    if cfg.log.every is not None and cfg.log.every < 1:
        problems.append(f"log.every must be at least 1 (got {cfg.log.every})")
    if cfg.log.val_subset < 1 or cfg.tensorboard.embedding_samples < 1:
        problems.append("log.val_subset and tensorboard.embedding_samples must be at least 1")
    if cfg.device not in ("auto", "cpu", "cuda"):
        problems.append(f"device must be auto, cpu or cuda (got {cfg.device!r})")
    if cfg.dist.nproc_per_node < 1:
        problems.append(f"dist.nproc_per_node must be at least 1 (got {cfg.dist.nproc_per_node})")
    elif cfg.data.val_size < cfg.dist.nproc_per_node:  # each process validates on its own share
        problems.append(f"data.val_size={cfg.data.val_size} must be at least dist.nproc_per_node={cfg.dist.nproc_per_node}")
    if cfg.dist.backend not in (None, "gloo", "nccl"):
        problems.append(f"dist.backend must be gloo, nccl or null (got {cfg.dist.backend!r})")
    if cfg.resume is not None and not Path(cfg.resume).exists():  # found here, not seconds later after the imports
        problems.append(f"checkpoint {cfg.resume} does not exist: resume= takes a checkpoint file of an earlier run")
    if cfg.run.name is not None and (not cfg.run.name.strip() or "/" in cfg.run.name or cfg.run.name in (".", "..")):
        problems.append(f"run.name must be a plain folder name (got {cfg.run.name!r})")
    if problems:
        raise ConfigError("; ".join(problems))


def non_finite(node: Any, key: str = "") -> list[tuple[str, float]]:
    """The float values anywhere in the config that are inf or nan, with their dotted keys."""
    if isinstance(node, (DictConfig, dict)):
        return [found for k, v in node.items() for found in non_finite(v, f"{key}.{k}" if key else str(k))]
    if isinstance(node, (ListConfig, list)):
        return [found for i, v in enumerate(node) for found in non_finite(v, f"{key}[{i}]")]
    return [(key, node)] if isinstance(node, float) and not math.isfinite(node) else []


def augment_problems(a: DictConfig) -> list[str]:
    problems = []
    if not 0 <= a.p <= 1:
        problems.append(f"train.augment.p must be between 0 and 1 (got {a.p})")
    for key in ("scale", "aspect", "gamma", "contrast"):
        value = list(a[key])
        if len(value) != 2 or not 0 < value[0] <= value[1]:
            problems.append(f"train.augment.{key} must be [low, high] with 0 < low <= high (got {value})")
    if not 0 <= a.rotate <= 180 or not 0 <= a.shear <= 1 or not 0 <= a.translate <= 1:
        problems.append("train.augment.rotate must be 0-180 degrees, train.augment.shear and train.augment.translate 0-1")
    shares = ("texture", "blur", "footwear_from_above", "sleeves_spread", "erase")
    if not all(0 <= a[key] <= 1 for key in shares):
        problems.append(f"train.augment.{', train.augment.'.join(shares)} must be between 0 and 1")
    return problems


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
