"""`python -m trainer.search [--config FILE] [--space FILE] [--trials N] [--timeout S] [--study NAME] [--storage URL]
[key.sub=value ...]`: an Optuna study whose trials are ordinary runs of the trainer.

Each trial is a run directory `<output.root>/<study>/trial-<n>/`, trained in this process by
`trainer.training.training` with the fixed keys of `--config` and the overrides, plus the trial's values of the keys
in `--space` (`trainer.search_space`). TPE proposes them; a pruner stops hopeless trials from inside the Ignite run.
The study lives in an SQLite file in its folder unless `--storage` names another database, so the same command
continues it, and several processes or machines given the same storage share it.
"""

import argparse
import gc
import hashlib
import json
import math
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from ignite.engine import Engine, Events
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, Trial, TrialState
from optuna_integration import PyTorchIgnitePruningHandler
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from torch.utils.tensorboard import SummaryWriter

from trainer.config import DEFAULT_CONFIG, load_config
from trainer.data import check_raw_files, ensure_downloaded
from trainer.engines import TrainingDiverged
from trainer.errors import UserError, fail
from trainer.handlers.interrupt import GracefulStop
from trainer.handlers.tensorboard import hparam_value, hparam_values, write_hparams
from trainer.safe_io import atomic_write_json, exclusive
from trainer.search_report import without_places, write_report
from trainer.search_space import SearchSpec, as_override, load_spec
from trainer.training import build_network, launch_settings, training

DEFAULT_SPACE = Path(__file__).resolve().parent.parent / "configs" / "search" / "lenet.yaml"
DEFAULT_TRIALS = 20  # when neither --trials nor --timeout is given
MAX_REFUSED_IN_A_ROW = 10  # trials whose values the trainer refuses together, before the study gives up
SQLITE_WAIT_S = 60  # how long a worker waits for another's write lock on an SQLite study before giving up
METRIC = "hparams/val_accuracy"
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}  # what stops a study: Ctrl-C and a polite kill


class SearchError(UserError):
    pass


class TrialRefused(UserError):
    """A trial's values that the trainer refuses together, though each end of each range passed alone (a warm-up
    longer than the epochs): the trial fails, the study goes on."""


class Stopped(BaseException):
    """A signal outside the trainer's own graceful stop: while a trial starts, between trials, or a second Ctrl-C.

    A BaseException, as KeyboardInterrupt is: libraries' `except Exception` must not catch it (OmegaConf re-raises
    what it catches with its own message in place of the signal number)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainer.search", description="An Optuna study whose trials are ordinary runs of the trainer.")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config of the fixed keys (default: configs/default.yaml)")
    parser.add_argument("--space", default=str(DEFAULT_SPACE), help="search space YAML (default: configs/search/lenet.yaml)")
    parser.add_argument("--trials", type=int, help=f"trials this process runs (default {DEFAULT_TRIALS}, or as many as --timeout allows)")
    parser.add_argument("--timeout", type=float, help="seconds after which this process starts no new trial")
    parser.add_argument("--study", help="study name and folder under output.root (default: the space file's name)")
    parser.add_argument("--storage", help="Optuna RDB URL (default: sqlite:///<output.root>/<study>/study.db)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of the fixed keys, e.g. train.max_epochs=8")
    return parser.parse_args(argv)


def check_arguments(args: argparse.Namespace, base: DictConfig) -> None:
    if args.trials is not None and args.trials < 1:
        raise SearchError(f"--trials must be at least 1 (got {args.trials})")
    if args.timeout is not None and not args.timeout > 0:
        raise SearchError(f"--timeout must be a positive number of seconds (got {args.timeout})")
    if args.study is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", args.study):
        raise SearchError(f"--study must be a plain folder name of at most 100 letters, digits, '.', '_' or '-' (got {args.study!r})")
    if base.run.name is not None or base.resume is not None:
        raise SearchError("run.name and resume are the study's to set (each trial is a new run trial-<n>): drop them")
    if launch_settings(base)["nproc_per_node"] or base.dist.nproc_per_node > 1:
        raise SearchError("a study trains each trial in its own process: drop dist.*, and run more workers on one --storage instead")


def open_study(name: str, storage: str | None, folder: Path, spec: SearchSpec, base: DictConfig) -> optuna.Study:
    """Create the study, or load it to continue: the same name in the same storage is the same study, which must go on
    training as its trials did (`check_same_recipe`)."""
    if storage is None:
        make_folder(folder)
        # built, not formatted: a '?', '#' or '%' in the path would be read as a URL's query, fragment or escape
        storage = URL.create("sqlite", database=str((folder / "study.db").resolve())).render_as_string(hide_password=False)
    # SQLite lets one process write at a time: the others wait this long for the lock instead of failing at once.
    engine_kwargs = {"connect_args": {"timeout": SQLITE_WAIT_S}} if storage.startswith("sqlite") else None
    # Two processes creating a new database's tables at once collide (a UNIQUE constraint on its schema version).
    lock = Path(tempfile.gettempdir()) / f"trainer-search-{hashlib.sha256(storage.encode()).hexdigest()[:16]}.lock"
    try:
        with exclusive(lock):
            study = optuna.create_study(
                storage=optuna.storages.RDBStorage(storage, engine_kwargs=engine_kwargs),
                study_name=name, sampler=spec.sampler(0), pruner=spec.pruner, direction="maximize", load_if_exists=True,
            )
            study.sampler = spec.sampler(len(study.trials))  # a study continued: its own trials move the seed on
    except Exception as exc:  # SQLAlchemy and the database drivers raise many types; all mean the same to a user
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SearchError(f"cannot open the study storage {hide_password(storage)}: {message}") from None
    check_same_recipe(study, base, spec)
    make_folder(folder)
    return study


def make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SearchError(f"cannot write the study's folder {folder}: {exc.strerror or exc}") from None


TRAINING_KEYS = ("model.", "train.", "data.val_size", "seed")  # what decides a trial's validation accuracy


def check_same_recipe(study: optuna.Study, base: DictConfig, spec: SearchSpec) -> None:
    """A study continued with another network, other training settings or another seed would compare its trials,
    and prune them, against another recipe's: refused, naming what changed. Only what decides a trial's validation
    accuracy counts (not TensorBoard, logging or where the data lie), and not the searched keys, whose ranges may be
    narrowed as a study goes on; a key that one side lacks counts as unchanged (a trainer update's new setting),
    except among the network's own arguments (model.kwargs), where it makes another network."""
    trained = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))  # not a trial stopped or
    first = next((t for t in trained if "config" in t.user_attrs), None)  # crashed before it trained, whose settings a
    if first is None:  # continuation may well mend
        return
    then, now = flatten(first.user_attrs["config"]), flatten(recipe_of(base))
    searched = spec.distributions.keys() | first.params.keys()  # a key searched then and set now keeps a value drawn then
    compared = (then.keys() & now.keys()) | {key for key in then.keys() ^ now.keys() if key.startswith("model.kwargs")}
    changed = sorted(key for key in compared if key.startswith(TRAINING_KEYS) and key not in searched
                     and then.get(key, "-") != now.get(key, "-"))
    if changed:
        shown = ", ".join(f"{key} ({then.get(key, '-')} then, {now.get(key, '-')} now)" for key in changed[:3])
        shown += f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise SearchError(f"study {study.study_name} trained its trials with other settings than these, {shown}: continue "
                          "it with the same --config and overrides (or, where a trainer update changed a default, set "
                          "the old value), or start another with --study NAME")


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of the leaves; an empty mapping has none (`model.kwargs: {}` is the network's defaults)."""
    flat = {}
    for key, value in tree.items():
        flat |= flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return flat


def hide_password(url: str) -> str:
    """As SQLAlchemy reads the URL (a password may hold a "/"); one it cannot read loses all up to its last "@"."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy can read (a bad port, say)
        return re.sub(r"(//[^:/@]+):.*@", r"\1:***@", url)


class PruneByTerminating(PyTorchIgnitePruningHandler):
    """Optuna's Ignite handler, reporting the validation accuracy each epoch, that stops a hopeless trial the way
    Ignite's EarlyStopping stops a run: `trainer.terminate()`.

    The original raises `optuna.TrialPruned` from inside the evaluator, which aborts the run in mid-epoch and leaves
    its directory without model.pt, metrics.json or the TensorBoard end views. Terminated, a pruned trial ends as a
    shorter run does, complete and comparable with the others."""

    def __init__(self, trial: Trial) -> None:
        self.trial, self.pruned_at = trial, None

    def attach(self, trainer: Engine, evaluator: Engine) -> None:
        """`training(extend=...)`: the trainer exists only once the run has built it."""
        super().__init__(self.trial, "accuracy", trainer)
        self.trainer = trainer
        evaluator.add_event_handler(Events.COMPLETED, self)

    def __call__(self, evaluator: Engine) -> None:
        try:
            super().__call__(evaluator)
        except optuna.TrialPruned:
            if self.trainer.should_terminate or self.trainer.state.epoch >= self.trainer.state.max_epochs:
                return  # its last epoch (every one, or early stopping's): complete, not pruned
            self.pruned_at = self.trainer.state.epoch
            self.trainer.terminate()


def raise_stopped(signum: int, frame: Any) -> None:
    raise Stopped(signum)


def install_stop_handlers() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, raise_stopped)


class HeldStop:
    """A stop signal held while a finished trial is recorded, so that the record is never cut short (`run_trial`)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        self.signum = self.signum or signum


def take_back_signals(held: HeldStop) -> int | None:
    """Take the stop signals back from a trial's GracefulStop, into `held` until the trial is recorded; return a
    signal that the GracefulStop caught once its trainer had stopped (during the final test and export), which
    nothing has acted on yet."""
    caught = getattr(signal.getsignal(signal.SIGINT), "__self__", None)
    for sig in STOP_SIGNALS:
        signal.signal(sig, held)
    return caught.signum if isinstance(caught, GracefulStop) else None


def trial_config(args: argparse.Namespace, trial: Trial, folder: Path) -> tuple[DictConfig, dict]:
    """The trial's run config, and its recipe (`recipe_of`), for `trainer.main --config`."""
    try:
        cfg = load_config(args.config, [*args.overrides, *(as_override(key, value) for key, value in trial.params.items())])
        build_network(cfg)
    except UserError as exc:
        raise TrialRefused(str(exc)) from None
    recipe = recipe_of(cfg)
    cfg.output.root, cfg.run.name = str(folder), f"trial-{trial.number}"
    cfg.tensorboard.hparams = False  # the study writes each trial's HParams itself, with every searched key
    return cfg, recipe


def recipe_of(cfg: DictConfig) -> dict:
    """Every key a run trains with, without where it runs (`without_places`)."""
    return without_places(OmegaConf.to_container(cfg, resolve=True))


def run_trials(args: argparse.Namespace, study: optuna.Study, spec: SearchSpec, folder: Path) -> int:
    """Trials until --trials or --timeout; returns the exit code of whatever stopped the study early, or 0."""
    limit = args.trials or (None if args.timeout else DEFAULT_TRIALS)
    deadline = time.monotonic() + args.timeout if args.timeout else math.inf
    done = refused = 0
    while (limit is None or done < limit) and time.monotonic() < deadline:
        try:
            code, refused = run_trial(args, study, spec, folder), 0
        except TrialRefused as exc:  # TPE learns nothing from them: a space whose values never fit would only spin
            code, refused = 0, refused + 1
            if refused == MAX_REFUSED_IN_A_ROW:
                print(write_report(study, folder), flush=True)
                return fail(f"the last {refused} trials' values were each refused together ({exc}): narrow the space")
        done += 1
        gc.collect()  # each trial holds the whole dataset in memory while it runs
        if code:
            return code
    return 0


def run_trial(args: argparse.Namespace, study: optuna.Study, spec: SearchSpec, folder: Path) -> int:
    """Ask for a trial, train it as an ordinary run, tell the study how it ended; returns 0 to go on, else the
    exit code that ends the study."""
    held = HeldStop()
    for sig in STOP_SIGNALS:  # held while the trial is created: a stop inside `ask` would leave it RUNNING for ever
        signal.signal(sig, held)
    try:
        return train_and_record(args, study, spec, folder, held)
    finally:
        install_stop_handlers()
        if held.signum:  # it came while the trial was created or recorded: the study stops now, the trial told
            raise Stopped(held.signum)


def train_and_record(args: argparse.Namespace, study: optuna.Study, spec: SearchSpec, folder: Path, held: HeldStop) -> int:
    trial = study.ask(spec.distributions)
    run_dir, cfg, pruning = folder / f"trial-{trial.number}", None, PruneByTerminating(trial)
    if held.signum:  # told now; `run_trial` then ends the study
        conclude(study, trial, run_dir, cfg, TrialState.FAIL, "stopped by the user")
        return 0
    install_stop_handlers()
    if run_dir.exists():
        study.tell(trial, state=TrialState.FAIL)
        return fail(f"{run_dir} already exists, from a study in another storage: choose another --study or output.root")
    try:
        cfg, recipe = trial_config(args, trial, folder)
        trial.set_user_attr("config", recipe)
        trial.set_user_attr("run_dir", str(run_dir))
        print(f"Trial {trial.number} of study {study.study_name}: {describe(trial.params)}", flush=True)
        try:
            code = training(0, cfg, extend=pruning.attach, keep_unfinished=True)
        finally:
            late = take_back_signals(held)
    except TrainingDiverged as exc:
        conclude(study, trial, run_dir, cfg, TrialState.FAIL, f"diverged: {exc}")
        if late:  # a stop the trainer heard before the divergence ended its run
            print(f"Trial {trial.number} failed: {exc}", flush=True)
            return stopped_message(study, trial, late)
        print(f"Trial {trial.number} failed, the study goes on: {exc}", flush=True)
        return 0
    except TrialRefused as exc:
        conclude(study, trial, run_dir, cfg, TrialState.FAIL, f"refused: {exc}")
        print(f"Trial {trial.number} ({describe(trial.params)}) failed: {exc}", flush=True)
        raise
    except (Stopped, KeyboardInterrupt) as exc:
        conclude(study, trial, run_dir, cfg, TrialState.FAIL, "stopped by the user")
        return stopped_message(study, trial, getattr(exc, "signum", signal.SIGINT))
    except UserError as exc:
        conclude(study, trial, run_dir, cfg, TrialState.FAIL, str(exc))
        return fail(exc)
    except OSError as exc:
        conclude(study, trial, run_dir, cfg, TrialState.FAIL, f"cannot write: {exc}")
        return fail(f"cannot write {exc.filename or run_dir}: {exc.strerror or exc}", 1)
    except Exception:
        conclude(study, trial, run_dir, cfg, TrialState.FAIL, "crashed: see the traceback")
        raise
    if code and not (run_dir / "metrics.json").is_file():  # the graceful stop in the training: checkpointed, resumable
        conclude(study, trial, run_dir, cfg, TrialState.FAIL, "stopped by the user")
        return stopped_message(study, trial, code - 128)
    late = late or (code - 128 if code else None)  # a stop after the training: the trial finished, and is recorded so
    metrics = json.loads((run_dir / "metrics.json").read_text())
    state = TrialState.PRUNED if pruning.pruned_at else TrialState.COMPLETE
    conclude(study, trial, run_dir, cfg, state, f"pruned after epoch {pruning.pruned_at}" if pruning.pruned_at else "", metrics)
    print(f"Trial {trial.number} {state.name.lower()}: validation accuracy {metrics['val_accuracy']:.4f}, "
          f"{metrics['epochs_run']} of {cfg.train.max_epochs} epochs", flush=True)
    return stopped_message(study, trial, late) if late else 0


def describe(params: dict) -> str:
    return ", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}" for key, value in params.items())


def stopped_message(study: optuna.Study, trial: Trial, signum: int) -> int:
    print(f"Study {study.study_name} stopped during trial {trial.number}; the same command continues it", file=sys.stderr)
    return 128 + signum


def conclude(study: optuna.Study, trial: Trial, run_dir: Path, cfg: DictConfig | None, state: TrialState,
             note: str, metrics: dict | None = None) -> None:
    """Tell the study, and leave the same in the run directory: trial.json and the trial's HParams."""
    trial.set_user_attr("note", note)
    if metrics is not None:  # a pruned trial's value in Optuna is its last epoch's; the run kept the epoch it exports
        trial.set_user_attr("epochs_run", metrics["epochs_run"])
        trial.set_user_attr("val_accuracy", metrics["val_accuracy"])
    frozen = study.tell(trial, metrics["val_accuracy"] if state == TrialState.COMPLETE else None, state=state)
    if not run_dir.is_dir():  # stopped before the run had a directory
        return
    record = {"study": study.study_name, "trial": trial.number, "state": state.name, "note": note, "params": trial.params}
    if metrics is not None:
        record |= {"val_accuracy": metrics["val_accuracy"], "epochs_run": metrics["epochs_run"]}
    atomic_write_json(record, run_dir / "trial.json")
    if cfg is not None and cfg.tensorboard.enabled:
        write_trial_hparams(run_dir, cfg, frozen, metrics["val_accuracy"] if metrics else None)


def write_trial_hparams(run_dir: Path, cfg: DictConfig, trial: FrozenTrial, val_accuracy: float | None) -> None:
    """The run's HParams as a plain run writes them, plus every searched key and the trial's state, so
    `tensorboard --logdir <study>` compares the trials; the same keys for every trial, as the HParams tab needs."""
    values = hparam_values(cfg) | {key: hparam_value(value) for key, value in trial.params.items()}
    values |= {"trial": trial.number, "trial_state": trial.state.name}
    with SummaryWriter(str(run_dir)) as writer:
        write_hparams(writer, values, {METRIC: val_accuracy})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the trials and the table say what Optuna's log would
    try:
        base = load_config(args.config, args.overrides)
        check_arguments(args, base)
        spec = load_spec(args.space, args.config, args.overrides)
        name = args.study or Path(args.space).stem
        folder = Path(base.output.root) / name
        ensure_downloaded(base.data.root, base.data.download)
        check_raw_files(base.data.root)
        study = open_study(name, args.storage, folder, spec, base)
    except UserError as exc:
        return fail(exc)
    install_stop_handlers()
    try:
        code = run_trials(args, study, spec, folder)
        if code:
            return code
        print(write_report(study, folder), flush=True)
    except Stopped as exc:
        print(f"Study {name} stopped between trials; the same command continues it", file=sys.stderr)
        return 128 + exc.signum
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return fail(f"no trial of study {name} has completed: see the notes in the table above", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
