"""A study's search space, sampler and pruner, read from YAML and checked against the config schema before any trial.

    sampler: {seed: 0}                             # keyword arguments of optuna.samplers.TPESampler
    pruner: {type: median, n_warmup_steps: 3}      # a pruner of PRUNERS and its keyword arguments
    space:                                         # dotted config keys, each with an Optuna distribution
      train.lr: {type: float, low: 0.02, high: 0.4, log: true}
      train.max_epochs: {type: int, low: 8, high: 16}
      train.optimizer: {type: categorical, choices: [sgd, adamw]}

Pruners compare trials at the same step; a step is an epoch, the value the validation accuracy.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from trainer.config import load_config, read_yaml
from trainer.errors import UserError
from trainer.training import build_network

PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "none": optuna.pruners.NopPruner,
}
DISTRIBUTIONS = {"float": FloatDistribution, "int": IntDistribution, "categorical": CategoricalDistribution}
FIELDS = {"float": ("low", "high", "log", "step"), "int": ("low", "high", "log", "step"), "categorical": ("choices",)}
# Each trial's place and name are the study's to set; searching them would break the study's layout.
STUDY_KEYS = ("run.name", "output.root", "resume", "dist.nproc_per_node", "dist.backend")


class SearchSpaceError(UserError):
    pass


@dataclass
class SearchSpec:
    distributions: dict[str, BaseDistribution]
    sampler_args: dict[str, Any]
    pruner: optuna.pruners.BasePruner

    def sampler(self, trials: int) -> optuna.samplers.TPESampler:
        """TPE with the file's arguments for a study that already has `trials` trials: a seed moves on by that many,
        so that a continued study draws new values rather than its first ones again, and the same commands still
        repeat the same study."""
        args = dict(self.sampler_args)
        if args.get("seed") is not None:
            args["seed"] = (args["seed"] + trials) % 2**32  # numpy's seeds end at 2**32 - 1
        return optuna.samplers.TPESampler(**args)


def load_spec(path: str | Path, config: str | Path, overrides: list[str]) -> SearchSpec:
    """Read `path` and refuse, in one sentence, anything a trial would trip over later."""
    path = Path(path)
    spec = read_mapping(path)
    unknown = set(spec) - {"space", "sampler", "pruner"}
    if unknown:
        raise SearchSpaceError(f"search space {path} has unknown sections {sorted(unknown)}: use space, sampler and pruner")
    space = spec.get("space")
    if not isinstance(space, dict) or not space:
        raise SearchSpaceError(f"search space {path} needs a non-empty 'space' mapping of config keys to distributions")
    base = load_config(config, overrides)
    distributions = {}
    for key, entry in space.items():
        distributions[key] = parse_distribution(path, key, entry)
        check_key(path, key, distributions[key], base, config, overrides)
    sampler_args = spec.get("sampler") or {}
    check_sampler(path, sampler_args, distributions)
    return SearchSpec(distributions, sampler_args, build_pruner(path, spec.get("pruner") or {}))


def read_mapping(path: Path) -> dict:
    spec = read_yaml(path, "search space")
    if not isinstance(spec, dict):
        raise SearchSpaceError(f"search space {path} must hold a mapping with a 'space' section")
    return spec


def parse_distribution(path: Path, key: Any, entry: Any) -> BaseDistribution:
    """`{type: float|int|categorical, ...}` as the Optuna distribution of the same name and fields."""
    if not isinstance(entry, dict) or entry.get("type") not in DISTRIBUTIONS:
        raise SearchSpaceError(
            f"search space {path}: {key} needs a distribution such as {{type: float, low: 0.01, high: 0.1, log: true}} "
            f"(type float, int or categorical), got {entry!r}"
        )
    kind = entry["type"]
    fields = {name: value for name, value in entry.items() if name != "type"}
    extra = set(fields) - set(FIELDS[kind])
    if extra:
        raise SearchSpaceError(f"search space {path}: {key} has unknown fields {sorted(extra)}: a {kind} takes {', '.join(FIELDS[kind])}")
    if kind == "categorical" and not isinstance(fields.get("choices"), list):  # Optuna would split a text into letters
        raise SearchSpaceError(f"search space {path}: {key}'s choices must be a list such as [sgd, adamw] (got {fields.get('choices')!r})")
    if kind == "int" and not all(isinstance(v, int) and not isinstance(v, bool) for n, v in fields.items() if n != "log"):
        raise SearchSpaceError(f"search space {path}: {key} is an int distribution: its low, high and step must be whole "
                               f"numbers (got {fields!r}), or use type float")
    if kind == "categorical" and not all(c is None or isinstance(c, (bool, int, float, str)) for c in fields.get("choices") or []):
        raise SearchSpaceError(f"search space {path}: {key}'s choices must each be a number, a text, true, false or null, "
                               f"as Optuna stores them, not a list or a mapping (got {fields['choices']!r})")
    try:
        return DISTRIBUTIONS[kind](**fields)
    except (TypeError, ValueError) as exc:
        raise SearchSpaceError(f"search space {path}: {key} is not a valid {kind} distribution ({first_line(exc)})") from None


def check_key(
    path: Path, key: Any, distribution: BaseDistribution, base: DictConfig, config: str | Path, overrides: list[str]
) -> None:
    """The key must be a setting of the schema, and both ends of its range (each choice) a config the trainer takes."""
    if not isinstance(key, str) or key in STUDY_KEYS:
        raise SearchSpaceError(f"search space {path}: {key!r} cannot be searched: the study sets {', '.join(STUDY_KEYS)} itself")
    if not key.startswith("model.kwargs."):  # the network's own arguments are free-form, as in the schema
        node = OmegaConf.select(base, key, default=KeyError)
        if node is KeyError:
            raise SearchSpaceError(f"search space {path}: {key} is not a config key (see trainer/config.py)")
        if isinstance(node, DictConfig):
            raise SearchSpaceError(f"search space {path}: {key} is a section of the config, not a key: search one of its keys")
    for value in corner_values(distribution):
        try:  # no schema checks model.*: the network itself must take them
            build_network(load_config(config, [*overrides, as_override(key, value)]))
        except UserError as exc:
            raise SearchSpaceError(f"search space {path}: {key}={value!r} is refused by the trainer: {exc}") from None


def corner_values(distribution: BaseDistribution) -> list:
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    return [distribution.low, distribution.high]


def as_override(key: str, value: Any) -> str:
    """`key=value` as the command line takes it; JSON spells values the way OmegaConf's parser reads them back."""
    return f"{key}={json.dumps(value)}"


def check_sampler(path: Path, kwargs: Any, distributions: dict[str, BaseDistribution]) -> None:
    """Refused now if TPESampler would refuse it in the study: most of its arguments are read only as it draws, some
    only once its random start-up trials are done, so it draws past them in a throwaway study in memory."""
    if not isinstance(kwargs, dict):
        raise SearchSpaceError(f"search space {path}: sampler must be a mapping of TPESampler arguments such as {{seed: 0}}")
    startup = kwargs.get("n_startup_trials", 10)
    try:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(**kwargs))
        for value in range(startup + 2 if isinstance(startup, int) and 0 <= startup <= 100 else 2):
            study.tell(study.ask(distributions), float(value))
    except (TypeError, ValueError) as exc:
        raise SearchSpaceError(f"search space {path}: the sampler's arguments are refused by TPESampler ({first_line(exc)})") from None


def build_pruner(path: Path, entry: Any) -> optuna.pruners.BasePruner:
    """Optuna's median pruner unless the file names another; its keyword arguments come along."""
    entry = dict(entry) if isinstance(entry, dict) else entry
    kind = entry.pop("type", "median") if isinstance(entry, dict) else None
    if kind not in PRUNERS:
        raise SearchSpaceError(f"search space {path}: pruner needs a type among {', '.join(PRUNERS)}, got {kind!r}")
    try:
        try_out(PRUNERS[kind](**entry))
    except ZeroDivisionError:
        raise SearchSpaceError(f"search space {path}: the {kind} pruner's arguments are refused (a resource of 0 or a "
                               "reduction factor of 1 divides by zero)") from None
    except (TypeError, ValueError) as exc:
        raise SearchSpaceError(f"search space {path}: the {kind} pruner's arguments are refused ({first_line(exc)})") from None
    return PRUNERS[kind](**entry)  # a fresh one: Hyperband sizes its brackets from the first study it sees


def try_out(pruner: optuna.pruners.BasePruner) -> None:
    """Two trials of a throwaway study in memory: some arguments (Hyperband's min_resource=0) are refused only once
    a trial has finished, which would stop a real study at its second trial."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for _ in range(2):
        trial = study.ask()
        trial.report(0.5, 1)
        trial.should_prune()
        study.tell(trial, 0.5)


def first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
