"""`python -m trainer.search`: tiny studies (400 images, 2 epochs) through the real command, and its refusals."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from omegaconf import OmegaConf
from sqlalchemy.engine import URL
from tensorboard.plugins.hparams import metadata

from tests.helpers import ROOT, accumulate, ctrl_c_after, killed_on_leaving, run_trainer, write_idx
from trainer import search
from trainer.config import load_config
from trainer.search_space import load_spec

# Every trial after the first is pruned at its first epoch unless it beats all earlier trials there; seeded, so
# the proposals (and so which trials are pruned) are the same on every run.
AGGRESSIVE = """
sampler: {seed: 0}
pruner: {type: percentile, percentile: 99.0, n_startup_trials: 1, n_warmup_steps: 0}
space:
  train.lr: {type: float, low: 0.0001, high: 0.3, log: true}
  train.label_smoothing: {type: float, low: 0.0, high: 0.1}
"""
DIVERGING = "space:\n  train.lr: {type: categorical, choices: [100000.0]}\n"
# 300 training images in 18 steps an epoch, raw weights (their average would lag far behind in so few steps).
TINY_RUN = ["data.val_size=100", "train.batch_size=16", "train.ema_decay=0"]
LIGHT_VIEWS = ["tensorboard.images=false", "tensorboard.graph=false", "tensorboard.embeddings=false", "tensorboard.eval_views=false"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A hermetic 400-image data set, a study folder and the aggressive space."""
    root = tmp_path_factory.mktemp("search")
    write_idx(root / "data", n_train=400, n_test=100)
    (root / "aggressive.yaml").write_text(AGGRESSIVE)
    return root


def search_command(tiny: Path, *args: str, space: str = "aggressive.yaml") -> list[str]:
    return [
        sys.executable, "-m", "trainer.search", "--config", "configs/quick.yaml", "--space", str(tiny / space), *args,
        f"output.root={tiny / 'runs'}", f"data.root={tiny / 'data'}", *TINY_RUN,
    ]


def run_search(tiny: Path, *args: str, space: str = "aggressive.yaml") -> subprocess.CompletedProcess:
    return subprocess.run(search_command(tiny, *args, space=space), cwd=ROOT, capture_output=True, text=True, timeout=600)


def load_study(tiny: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=sqlite_url(tiny / "runs" / name / "study.db"))


def sqlite_url(path: Path) -> str:
    return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def study(tiny) -> tuple[Path, subprocess.CompletedProcess]:
    result = run_search(tiny, "--study", "tiny", "--trials", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    return tiny / "runs" / "tiny", result


def test_trials_are_run_directories_with_every_searched_key_in_hparams(study):
    folder, _ = study
    for n in range(4):
        run_dir = folder / f"trial-{n}"
        assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.json").is_file()
        events = accumulate(run_dir)
        start = metadata.parse_session_start_info_plugin_data(events.PluginTagToContent("hparams")[metadata.SESSION_START_INFO_TAG])
        assert {"train.lr", "train.label_smoothing", "model.name", "model.kwargs", "trial_state"} <= set(start.hparams)
        assert start.hparams["trial_state"].string_value == json.loads((run_dir / "trial.json").read_text())["state"]
        assert "hparams/val_accuracy" in events.Tags()["scalars"]


def test_a_pruned_trial_stops_early_and_its_run_directory_says_so(study, tiny):
    folder, _ = study
    records = [json.loads((folder / f"trial-{n}" / "trial.json").read_text()) for n in range(4)]
    pruned = [r for r in records if r["state"] == "PRUNED"]
    assert pruned, records
    rows = {row["trial"]: row for row in json.loads((folder / "trials.json").read_text())}
    for record in pruned:
        assert record["epochs_run"] == 1 and record["note"] == "pruned after epoch 1"
        assert rows[record["trial"]]["val_accuracy"] == record["val_accuracy"], "one accuracy for a trial, everywhere"
    states = {t.number: t.state.name for t in load_study(tiny, "tiny").trials}
    assert states == {r["trial"]: r["state"] for r in records}


def test_the_study_prints_a_table_and_saves_plots_and_trials_json(study):
    folder, result = study
    assert "val acc" in result.stdout and "Best: trial" in result.stdout
    rows = json.loads((folder / "trials.json").read_text())
    assert [row["trial"] for row in rows] == [0, 1, 2, 3]
    for name in ("optimization_history", "param_importances", "slice", "intermediate_values"):
        assert (folder / f"{name}.png").stat().st_size > 1000, name


def test_the_best_config_reloads_and_trains(study, tiny, tmp_path):
    folder, _ = study
    best = max((t for t in load_study(tiny, "tiny").trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    cfg = load_config(folder / "best.yaml")
    assert cfg.train.lr == best.params["train.lr"] and cfg.train.label_smoothing == best.params["train.label_smoothing"]
    assert {"root", "photos"}.isdisjoint(yaml.safe_load((folder / "best.yaml").read_text())["data"]), "this machine's places"
    result = run_trainer(f"output.root={tmp_path}", "run.name=best", f"data.root={tiny / 'data'}", *LIGHT_VIEWS, config=str(folder / "best.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "best" / "metrics.json").read_text())["epochs_run"] == 2


def test_running_the_same_command_again_continues_the_study(study, tiny):
    folder, _ = study
    result = run_search(tiny, "--study", "tiny", "--trials", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Trial 4 of study tiny" in result.stdout and (folder / "trial-4" / "trial.json").is_file()
    trials = load_study(tiny, "tiny").trials
    assert len(trials) == 5
    assert trials[4].params not in [t.params for t in trials[:4]], "a continued seeded study draws new values"


def test_two_workers_share_one_sqlite_study_without_losing_or_doubling_a_trial(tiny):
    command = search_command(tiny, "--study", "shared", "--trials", "2")

    def start_worker() -> subprocess.Popen:
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    with killed_on_leaving(start_worker()) as first, killed_on_leaving(start_worker()) as second:
        workers = [first, second]
        outputs = [worker.communicate(timeout=600) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], [err[-2000:] for _, err in outputs]
    ran = [{n for n in range(4) if f"Trial {n} of study shared" in out} for out, _ in outputs]
    assert len(ran[0]) == len(ran[1]) == 2 and ran[0] | ran[1] == {0, 1, 2, 3}, ran
    trials = load_study(tiny, "shared").trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert sorted(p.name for p in (tiny / "runs" / "shared").glob("trial-*")) == [f"trial-{n}" for n in range(4)]


def test_a_diverging_trial_fails_and_the_study_goes_on(tiny):
    (tiny / "diverging.yaml").write_text(DIVERGING)
    result = run_search(tiny, "--study", "diverging", "--trials", "2", "tensorboard.enabled=false", space="diverging.yaml")
    assert result.returncode == 1 and "no trial of study diverging has completed" in result.stderr, result.stderr[-3000:]
    assert result.stdout.count("failed, the study goes on") == 2
    trials = load_study(tiny, "diverging").trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert trials[0].user_attrs["note"].startswith("diverged: the training loss became")
    record = json.loads((tiny / "runs" / "diverging" / "trial-0" / "trial.json").read_text())
    assert record["state"] == "FAIL" and record["note"] == trials[0].user_attrs["note"], "its directory says how it ended"


def test_ctrl_c_stops_the_trial_gracefully_marks_it_failed_and_exits_130(tiny):
    command = search_command(tiny, "--study", "stopped", "--trials", "3", "train.max_epochs=40")
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    seen, rest = ctrl_c_after(process, "Epoch 1/40")
    assert process.returncode == 130, (seen + rest)[-3000:]
    assert "the same command continues it" in rest
    [trial] = load_study(tiny, "stopped").trials
    assert trial.state.name == "FAIL" and trial.user_attrs["note"] == "stopped by the user"
    run_dir = tiny / "runs" / "stopped" / "trial-0"
    assert json.loads((run_dir / "trial.json").read_text())["state"] == "FAIL"
    assert list((run_dir / "checkpoints").glob("last_checkpoint_*.pt")), "the trainer's graceful stop checkpoints the run"


@pytest.mark.parametrize(
    "space, args, message",
    [
        ("space:\n  train.lrr: {type: float, low: 0.01, high: 0.1}\n", [], "train.lrr is not a config key"),
        ("space:\n  train.lr: {}\n", [], "train.lr needs a distribution"),
        ("space:\n  train.lr: {type: float, low: 0.1, high: 0.01}\n", [], "train.lr is not a valid float distribution"),
        ("space:\n  train.optimizer: {type: categorical, choices: []}\n", [], "is not a valid categorical distribution"),
        ("space:\n  train.lr: {type: float, low: -1.0, high: 0.1}\n", [], "train.lr must be positive"),
        ("space:\n  train.max_epochs: {type: float, low: 1.5, high: 3.0}\n", [], "train.max_epochs=1.5 is refused"),
        ("space: {}\n", [], "needs a non-empty 'space' mapping"),
        ("space:\n  model.kwargs.conv9: {type: int, low: 1, high: 2}\n", [], "model.kwargs.conv9=1 is refused by the trainer"),
        ("space:\n  model.name: {type: categorical, choices: [lenet5, resnet]}\n", [], "model.name='resnet' is refused by the trainer: unknown model"),
        ("space:\n  model.kwargs.num_classes: {type: int, low: 5, high: 10}\n", [], "model.kwargs.num_classes is the trainer's to set"),
        ("space:\n  train.lr: {type: float, low: 0.01, high: 0.1}\n", ["--storage", "sqlite:////no/such/folder/study.db"], "cannot open the study storage"),
        ("space:\n  train.lr: {type: float, low: 0.01, high: 0.1}\n", ["--storage", "nosuchdb://user:secret@host/db"], "cannot open the study storage nosuchdb://user:***@host/db"),
        ("space:\n  train.lr: {type: float, low: 0.01, high: 0.1}\n", ["--storage", "nosuchdb://user:se/cret@host/db"], "cannot open the study storage nosuchdb://user:***@host/db"),
        ("space:\n  train.lr: {type: float, low: 0.01, high: 0.1}\n", ["--trials", "0"], "--trials must be at least 1"),
        ("space:\n  train.lr: {type: float, low: 0.01, high: 0.1}\n", ["--study", "s" * 101], "--study must be a plain folder name of at most 100"),
        ("space:\n  train.augment.scale: {type: categorical, choices: [[0.9, 1.1], [1.0, 1.0]]}\n", [], "choices must each be a number"),
        ("space:\n  train.optimizer: {type: categorical, choices: sgd}\n", [], "train.optimizer's choices must be a list such as [sgd, adamw] (got 'sgd')"),
        ("space:\n  train.max_epochs: {type: int, low: 0.5, high: 3}\n", [], "its low, high and step must be whole numbers"),
        ("sampler: {n_startup_trials: abc}\nspace:\n  train.lr: {type: float, low: 0.01, high: 0.1}\n", [],
         "the sampler's arguments are refused by TPESampler"),
        ("sampler: {n_startup_trials: 0, n_ei_candidates: 0}\nspace:\n  train.lr: {type: float, low: 0.01, high: 0.1}\n", [],
         "the sampler's arguments are refused by TPESampler"),
        ("pruner: {type: hyperband, min_resource: 0}\nspace:\n  train.lr: {type: float, low: 0.01, high: 0.1}\n", [],
         "the hyperband pruner's arguments are refused (a resource of 0"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2_before_any_training(tiny, tmp_path, capsys, space, args, message):
    (tmp_path / "space.yaml").write_text(space)
    code = search.main(["--space", str(tmp_path / "space.yaml"), *args, f"output.root={tmp_path / 'runs'}", f"data.root={tiny / 'data'}", "data.val_size=100"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1 and message in err, err
    assert "secret" not in err
    assert not list(tmp_path.glob("runs/*/trial-*"))


def two_trials_in_this_process(tiny: Path, folder: Path, name: str, space: Path | None = None, trials: int = 2) -> tuple[int, list[optuna.trial.FrozenTrial]]:
    """`search.main` in the test's own process, where a test can reach into it; its signal handlers put back after."""
    handlers = {sig: signal.getsignal(sig) for sig in search.STOP_SIGNALS}
    try:
        code = search.main(["--space", str(space or tiny / "aggressive.yaml"), "--config", "configs/quick.yaml", "--study", name,
                            "--trials", str(trials), f"output.root={folder}", f"data.root={tiny / 'data'}", *TINY_RUN, *LIGHT_VIEWS])
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return code, optuna.load_study(study_name=name, storage=sqlite_url(folder / name / "study.db")).trials


def test_values_refused_together_fail_their_trial_and_the_study_goes_on(tiny, tmp_path, capsys):
    """Each end of each range passes the checks with the other keys as the config has them; together they do not."""
    space = tmp_path / "space.yaml"
    space.write_text("space:\n  train.max_epochs: {type: categorical, choices: [1]}\n"
                     "  train.warmup_epochs: {type: categorical, choices: [2.0]}\n")
    code, trials = two_trials_in_this_process(tiny, tmp_path, "together", space)
    out, err = capsys.readouterr()
    assert code == 1 and "no trial of study together has completed" in err, err
    assert out.count("(train.max_epochs=1, train.warmup_epochs=2) failed: train.warmup_epochs=2.0 is longer than") == 2, out
    assert "Plot optimization_history not drawn: no trial has completed" in out, "no empty plots, nor Optuna's warnings"
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert trials[0].user_attrs["note"].startswith("refused: train.warmup_epochs=2.0 is longer")
    assert (tmp_path / "together" / "trials.json").is_file() and not list((tmp_path / "together").glob("trial-*"))
    code, trials = two_trials_in_this_process(tiny, tmp_path, "never", space, trials=50)
    err = capsys.readouterr().err
    assert code == 2 and len(trials) == search.MAX_REFUSED_IN_A_ROW, "a space whose values never fit does not spin"
    assert err.startswith(f"error: the last {search.MAX_REFUSED_IN_A_ROW} trials' values were each refused together"), err
    assert len(json.loads((tmp_path / "never" / "trials.json").read_text())) == search.MAX_REFUSED_IN_A_ROW, "reported"


def test_a_stop_while_a_finished_trial_is_recorded_ends_the_study_after_recording_it(tiny, tmp_path, monkeypatch):
    """Ctrl-C in the moment between a trial's end and its record: the trial is told first, then the study stops."""
    record = search.conclude

    def interrupted_conclude(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        record(*args, **kwargs)

    monkeypatch.setattr(search, "conclude", interrupted_conclude)
    code, [trial] = two_trials_in_this_process(tiny, tmp_path, "race")
    assert code == 130 and trial.state.name in ("COMPLETE", "PRUNED"), (code, trial.state)


def test_a_stop_during_a_trial_s_export_records_the_finished_trial_and_ends_the_study(tiny, tmp_path, monkeypatch):
    """The trainer hears a signal that lands after the training once its export is done: the trial has finished and
    is recorded with its value, not as stopped, and the study stops."""
    import trainer.training

    export = trainer.training.finish_run

    def interrupted_export(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return export(*args, **kwargs)

    monkeypatch.setattr(trainer.training, "finish_run", interrupted_export)
    code, [trial] = two_trials_in_this_process(tiny, tmp_path, "late")
    assert code == 143 and trial.state.name == "COMPLETE" and trial.value is not None, (code, trial.state)


def test_a_missing_space_file_is_refused(tiny, tmp_path, capsys):
    assert search.main(["--space", str(tmp_path / "nope.yaml"), f"data.root={tiny / 'data'}"]) == 2
    assert "search space" in capsys.readouterr().err and os.listdir(tmp_path) == []


def test_an_unwritable_output_root_is_one_sentence(tiny, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    code = search.main(["--space", str(tiny / "aggressive.yaml"), f"output.root={tmp_path / 'file' / 'runs'}", f"data.root={tiny / 'data'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot write the study's folder") and len(err.strip().splitlines()) == 1, err


def test_a_study_goes_on_only_with_the_settings_it_began_with(tiny, tmp_path, capsys):
    """Continued with another fixed key, its trials would be compared, and pruned, against another recipe's. The folder
    has characters a URL reads otherwise ('?' a query, '%' an escape): the database must still be made inside it."""
    folder = tmp_path / "odd?x=1 %20"
    code, trials = two_trials_in_this_process(tiny, folder, "mixed", trials=1)
    out = capsys.readouterr().out
    assert code == 0 and [t.state.name for t in trials] == ["COMPLETE"] and (folder / "mixed" / "study.db").is_file()
    assert "Plot param_importances not drawn: one trial has completed" in out, "no bars of equal length from one trial"
    def continued(*overrides: str) -> int:
        return search.main(["--space", str(tiny / "aggressive.yaml"), "--config", "configs/quick.yaml", "--study", "mixed",
                            "--trials", "1", f"output.root={folder}", f"data.root={tiny / 'data'}", *TINY_RUN, *LIGHT_VIEWS, *overrides])

    assert continued("train.weight_decay=0.001") == 2
    err = capsys.readouterr().err
    assert "study mixed trained its trials with other settings than these, train.weight_decay (0.0005 then, 0.001 now)" in err, err
    assert continued("model.kwargs={conv1: 8}") == 2 and "model.kwargs.conv1 (- then, 8 now)" in capsys.readouterr().err
    # what does not decide a trial's accuracy (its views, logging), and a searched key, may differ: the study goes on
    assert continued("tensorboard.histograms=true", "log.every=5", "train.lr=0.01") == 0, capsys.readouterr().err
    # a key taken out of the space and set: its first trial's value was a draw, not a setting
    narrowed = tmp_path / "narrowed.yaml"
    narrowed.write_text("sampler: {seed: 0}\nspace:\n  train.lr: {type: float, low: 0.0001, high: 0.3, log: true}\n")
    code = search.main(["--space", str(narrowed), "--config", "configs/quick.yaml", "--study", "mixed", "--trials", "1",
                        f"output.root={folder}", f"data.root={tiny / 'data'}", *TINY_RUN, *LIGHT_VIEWS, "train.label_smoothing=0.1"])
    assert code == 0, capsys.readouterr().err


def test_a_study_searching_the_network_s_own_arguments_goes_on_with_the_same_command(tiny, tmp_path):
    """configs/quick.yaml gives the network no arguments (`model.kwargs: {}`): the searched one is the trial's own."""
    space = tmp_path / "kwargs.yaml"
    space.write_text("sampler: {seed: 0}\nspace:\n  model.kwargs.conv1: {type: categorical, choices: [6, 8]}\n")
    for _ in range(2):
        code, trials = two_trials_in_this_process(tiny, tmp_path, "kwargs", space, trials=1)
        assert code == 0
    assert len(trials) == 2


def test_a_stop_while_a_trial_is_created_tells_the_study_that_trial_failed(tiny, tmp_path, monkeypatch):
    """Ctrl-C inside `study.ask`, once the trial's row is written: the trial is told, not left RUNNING for ever."""
    ask = optuna.Study.ask

    def interrupted_ask(self, *args, **kwargs):
        trial = ask(self, *args, **kwargs)
        if self.study_name == "asked":  # not the pruner's try-out in memory
            os.kill(os.getpid(), signal.SIGINT)
        return trial

    monkeypatch.setattr(optuna.Study, "ask", interrupted_ask)
    code, [trial] = two_trials_in_this_process(tiny, tmp_path, "asked")
    assert code == 130 and trial.state.name == "FAIL" and trial.user_attrs["note"] == "stopped by the user", (code, trial.state)


def test_a_stop_inside_a_library_keeps_its_signal(tiny):
    """OmegaConf re-raises an exception it catches with its own message as the argument: a stop must pass through it
    unchanged, or the study's exit code is computed from that text (a traceback, exit 1)."""
    OmegaConf.register_resolver("stop_now", lambda: search.raise_stopped(signal.SIGINT, None), replace=True, annotation_validation="off")
    with pytest.raises(search.Stopped) as stopped:
        OmegaConf.to_container(OmegaConf.create({"key": "${stop_now:}"}), resolve=True)
    assert stopped.value.signum == signal.SIGINT


def test_a_pruned_trial_s_accuracy_in_the_table_is_its_run_s_best_epoch_not_optuna_s_last():
    """Optuna keeps a pruned trial's last reported value; the run kept, and trial.json reports, its best epoch's."""
    from trainer.search_report import trial_row

    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    for epoch, accuracy in enumerate((0.5, 0.7, 0.6), 1):
        trial.report(accuracy, epoch)
    trial.set_user_attr("val_accuracy", 0.7)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    [frozen] = study.trials
    assert frozen.value == 0.6 and trial_row(frozen)["val_accuracy"] == 0.7


def test_a_stop_that_lands_as_the_trial_diverges_ends_the_study(tiny, tmp_path, monkeypatch, capsys):
    """The trainer's graceful stop hears the Ctrl-C, but the divergence ends the run first: the trial fails as diverged,
    and the study still stops rather than start the next trial."""
    import math

    import trainer.engines

    class CtrlCAtTheDivergence:  # `math`, where a Ctrl-C lands just as the loss stops being finite
        def __getattr__(self, name: str):
            return getattr(math, name)

        @staticmethod
        def isfinite(value: float) -> bool:
            if not math.isfinite(value):
                os.kill(os.getpid(), signal.SIGINT)
            return math.isfinite(value)

    monkeypatch.setattr(trainer.engines, "math", CtrlCAtTheDivergence())
    (tmp_path / "diverging.yaml").write_text(DIVERGING)
    code, trials = two_trials_in_this_process(tiny, tmp_path, "diverged", tmp_path / "diverging.yaml")
    out, err = capsys.readouterr()
    assert code == 130 and [t.state.name for t in trials] == ["FAIL"], (code, [t.state.name for t in trials])
    assert "the study goes on" not in out and "Study diverged stopped during trial 0" in err, (out, err)
    assert trials[0].user_attrs["note"].startswith("diverged")


def test_best_yaml_names_no_machine_s_folder_even_for_a_trial_stored_with_one(tmp_path):
    """Trials recorded before data.photos was left out of their recipe still hold it: best.yaml must not."""
    from trainer.search_report import best_config_yaml

    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    recipe = search.recipe_of(load_config("configs/quick.yaml"))
    trial.set_user_attr("config", recipe | {"data": recipe["data"] | {"photos": "/home/someone/photos"}})
    study.tell(trial, 0.5)
    (tmp_path / "best.yaml").write_text(best_config_yaml(study, study.trials[0], tmp_path / "best.yaml"))
    written = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert {"root", "photos"}.isdisjoint(written["data"]) and written["train"] == recipe["train"]
    assert load_config(tmp_path / "best.yaml").data.photos is None, "the trainer's own default: this machine's photos"


def test_a_trial_the_pruner_would_stop_at_its_last_epoch_is_complete(tiny, tmp_path, capsys):
    """It has trained every epoch: nothing is left to save by stopping it, so it counts among the complete trials
    (the best trial, TPE's model) however far below the pruner's threshold it ends."""
    space = tmp_path / "space.yaml"
    space.write_text("pruner: {type: threshold, lower: 0.99}\nspace:\n  train.max_epochs: {type: categorical, choices: [1]}\n")
    code, trials = two_trials_in_this_process(tiny, tmp_path, "last", space, trials=1)
    out, err = capsys.readouterr()
    assert code == 0 and [t.state.name for t in trials] == ["COMPLETE"], out + err
    # the same for the epoch at which early stopping ends it (a learning rate too small to improve on epoch 1)
    space.write_text("pruner: {type: threshold, lower: 0.99, n_warmup_steps: 2}\nspace:\n"
                     "  train.max_epochs: {type: categorical, choices: [4]}\n  train.lr: {type: categorical, choices: [1.0e-9]}\n"
                     "  train.early_stopping_patience: {type: categorical, choices: [1]}\n")
    code, trials = two_trials_in_this_process(tiny, tmp_path, "stopped", space, trials=1)
    out, err = capsys.readouterr()
    assert code == 0 and [t.state.name for t in trials] == ["COMPLETE"], out + err
    assert json.loads(next((tmp_path / "stopped").glob("trial-*/metrics.json")).read_text())["epochs_run"] == 2


def test_a_seed_at_the_top_of_numpy_s_range_still_continues_its_study(tmp_path):
    """A continued study's sampler seed moves on by the trials it has; from 2**32 - 1 it wraps round."""
    (tmp_path / "space.yaml").write_text("sampler: {seed: 4294967295}\nspace:\n  train.lr: {type: float, low: 0.01, high: 0.1}\n")
    spec = load_spec(tmp_path / "space.yaml", "configs/quick.yaml", [])

    def first_draw(sampler: optuna.samplers.BaseSampler) -> dict:
        return optuna.create_study(sampler=sampler).ask(spec.distributions).params

    assert first_draw(spec.sampler(trials=3)) == first_draw(optuna.samplers.TPESampler(seed=2))
