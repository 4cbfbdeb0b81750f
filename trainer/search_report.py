"""What a study leaves for people: a table of its trials (printed and as JSON), the best trial's config as YAML that
`python -m trainer.main --config` takes, and Optuna's matplotlib plots.

Written from the storage, so it covers every worker's trials; a file lock keeps two workers that finish together
from interleaving their writes.
"""

import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import yaml  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402
from optuna.visualization import matplotlib as optuna_plots  # noqa: E402

from trainer.safe_io import atomic_replace, atomic_write_json, exclusive  # noqa: E402

PLOTS = {
    "optimization_history": optuna_plots.plot_optimization_history,
    "param_importances": optuna_plots.plot_param_importances,
    "slice": optuna_plots.plot_slice,
    "intermediate_values": optuna_plots.plot_intermediate_values,  # every trial's curve: where the pruned ones stopped
}
AXIS_LABELS = {"optimization_history": ("trial", "validation accuracy"), "intermediate_values": ("epoch", "validation accuracy")}


def trial_row(trial: FrozenTrial) -> dict:
    """One trial as the table and trials.json show it: the validation accuracy of the model its run kept (a pruned
    trial's best epoch, as its run directory says, not the last epoch's value Optuna holds, unless the trial exports
    its last epoch's: `train.export=last`), never the test's."""
    duration = trial.duration.total_seconds() if trial.duration else None
    return {
        "trial": trial.number,
        "state": trial.state.name,
        "val_accuracy": trial.user_attrs.get("val_accuracy", trial.value),
        "epochs": trial.user_attrs.get("epochs_run"),
        "seconds": round(duration, 1) if duration is not None else None,
        "params": trial.params,
        "note": trial.user_attrs.get("note", ""),
    }


def format_table(rows: list[dict]) -> str:
    keys = sorted({key for row in rows for key in row["params"]})
    header = ["trial", "state", "val acc", "epochs", "seconds", *keys, "note"]
    lines = [header]
    for row in rows:
        cells = [row["trial"], row["state"], row["val_accuracy"], row["epochs"], row["seconds"]]
        lines.append([cell(value) for value in (*cells, *(row["params"].get(key) for key in keys))] + [row["note"]])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(("  ".join(str(c).rjust(w) for c, w in zip(line, widths)) + "  " + str(line[-1])).rstrip() for line in lines)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: t.value) if complete else None


def without_places(recipe: dict) -> dict:
    """A run's config without where it ran: the places of the data and of the real photos belong to each machine
    (FASHION_MNIST_ROOT or data.root=), the output's and the run's name to the study."""
    recipe = {key: value for key, value in recipe.items() if key not in ("run", "output", "resume")}
    recipe["data"] = {key: value for key, value in recipe["data"].items() if key not in ("root", "photos")}
    return recipe


def best_config_yaml(study: optuna.Study, trial: FrozenTrial, path: Path) -> str:
    """The trial's recipe, as stored with it (so any worker can write it): every key it trained with but where it ran
    (trials recorded before data.photos was left out still hold it)."""
    header = (
        f"# Best trial of study {study.study_name}: trial {trial.number}, validation accuracy {trial.value:.4f} "
        f"with seed {trial.user_attrs['config']['seed']}.\n"
        f"# Train it: python -m trainer.main --config {path}   (data.root and output.root: environment or command line)\n"
    )
    return header + yaml.safe_dump(without_places(trial.user_attrs["config"]), sort_keys=False)


def save_plots(study: optuna.Study, folder: Path) -> dict[str, str]:
    """Each plot as PNG; returns why any could not be drawn (too few finished trials, for instance)."""
    completed = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if not completed:  # Optuna would draw empty axes, and warn
        return {name: "no trial has completed" for name in PLOTS}
    skipped = {}
    for name, plot in PLOTS.items():
        if name == "param_importances" and completed < 2:  # Optuna would draw equal bars from one trial, and warn
            skipped[name] = "one trial has completed: importances need two or more"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # a value searched on one completed trial: matplotlib widens the slice's empty range itself
                warnings.filterwarnings("ignore", "Attempting to set identical low and high xlims", UserWarning)
                # a study of a few trials: its importances are rough, as any reader of two or three bars can tell
                warnings.filterwarnings("ignore", "Target and region quantiles select the same set", UserWarning)
                warnings.filterwarnings("ignore", "Some regimes for parameter", UserWarning)
                axes = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            skipped[name] = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            continue
        if name in AXIS_LABELS:  # Optuna's generic "Objective Value" and "Step", in this study's terms
            axes.set_xlabel(AXIS_LABELS[name][0])
            axes.set_ylabel(AXIS_LABELS[name][1])
        figure = np.ravel(axes)[0].figure
        atomic_replace(folder / f"{name}.png", lambda tmp: figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
        plt.close(figure)
    return skipped


def write_report(study: optuna.Study, folder: Path) -> str:
    """trials.json, best.yaml and the plots in `folder`; returns the text to print: the table and the best trial."""
    rows = [trial_row(t) for t in study.get_trials(deepcopy=False)]
    best = best_trial(study)
    with exclusive(folder / ".report.lock"):
        atomic_write_json(rows, folder / "trials.json")
        if best is not None:  # before the plots, which take seconds
            atomic_replace(folder / "best.yaml", lambda tmp: Path(tmp).write_text(best_config_yaml(study, best, folder / "best.yaml")))
        skipped = save_plots(study, folder)
    counts = {state.name.lower(): sum(row["state"] == state.name for row in rows) for state in TrialState}
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    lines = [format_table(rows), f"Study {study.study_name}: {len(rows)} trials ({summary}); table in {folder / 'trials.json'}"]
    lines += [f"Plot {name} not drawn: {why}" for name, why in skipped.items()]
    if best is not None:
        lines.append(
            f"Best: trial {best.number}, validation accuracy {best.value:.4f}, run {best.user_attrs.get('run_dir')}; "
            f"train it with: python -m trainer.main --config {folder / 'best.yaml'}"
        )
    return "\n".join(lines)
