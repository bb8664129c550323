"""mnist-results on a study this test writes with known trials (complete, pruned, rejected, failed)."""

import csv
import io
import json
import sqlite3
import struct
import warnings

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from mnist_arch.model import count_parameters
from sweeper.export import ExportError, export_trial
from sweeper.results import ResultsError, main, parse_args, run
from sweeper.table import summary, trial_rows

from .support import CONF, compose, run_cli

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = {"model/widths": CategoricalDistribution(["tiny", "s4", "wide"]), "optim.lr": FloatDistribution(0.01, 0.3, log=True)}


def add(study, number_params, state, widths, lr, attrs, curve=()):
    trial = optuna.trial.create_trial(
        params={"model/widths": widths, "optim.lr": lr}, distributions=SPACE, state=state,
        value=attrs.get("best_test_acc") if state == TrialState.COMPLETE else None,
        intermediate_values={i + 1: v for i, v in enumerate(curve)},
        user_attrs={"n_params": number_params, "max_params": 20000, "curve": list(curve),
                    "overrides": [f"model/widths={widths}", f"optim.lr={lr}"], **attrs},
    )
    study.add_trial(trial)


def study_of_metric(url, name, metric):
    """A new maximize study whose objective is named ``metric``, as the sweeper names mnist_arch's."""
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([metric])
    return study


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path}/sweeps.db"
    study = study_of_metric(url, "known", "best_test_acc")
    full = {"launched": True, "epochs_run": 4, "seconds": 100.0, "device": "cpu"}
    add(study, 7988, TrialState.COMPLETE, "s4", 0.05,
        {**full, "best_test_acc": 99.45, "final_test_acc": 99.41, "best_epoch": 3, "epoch_reached_target": 3,
         "min_last_k_test_acc": 99.0, "min_last_k_val_acc": 98.9, "target_acc": 99.0}, [98, 99, 99.45, 99.41])
    add(study, 4938, TrialState.COMPLETE, "tiny", 0.1,
        {**full, "best_test_acc": 99.2, "final_test_acc": 99.2, "best_epoch": 4, "epoch_reached_target": None,
         "min_last_k_test_acc": 98.0}, [97, 98, 99, 99.2])
    add(study, 16454, TrialState.COMPLETE, "wide", 0.02,
        {**full, "best_test_acc": 99.3, "final_test_acc": 99.1, "best_epoch": 2, "epoch_reached_target": None,
         "min_last_k_test_acc": 99.1}, [98, 99.3, 99.2, 99.1])
    add(study, 4938, TrialState.PRUNED, "tiny", 0.01,
        {"launched": True, "epochs_run": 1, "seconds": 25.0, "best_test_acc": 90.0, "final_test_acc": 90.0,
         "best_epoch": 1, "pruned_at_epoch": 1}, [90.0])
    add(study, 44286, TrialState.PRUNED, "wide", 0.2,
        {"rejected": "over_budget", "reason": "44,286 parameters > budget.max_params=20,000"})
    add(study, 7988, TrialState.FAIL, "s4", 0.3, {"launched": True, "error": "RuntimeError: boom"})
    # a trial still running: the study is read while the sweep goes on (its point fixed: a random one fell
    # inside the filters' bounds one time in five)
    study.enqueue_trial({"model/widths": "wide", "optim.lr": 0.3})
    study.ask(SPACE)
    return tmp_path, url


@pytest.fixture
def app_conf(tmp_path):
    """A copy of the app's config folder, for exports to write into."""
    import shutil

    shutil.copytree(CONF, tmp_path / "conf")
    return dict(config_dir=str(tmp_path / "conf"), config_name="train", module="mnist_arch.config")


def rows_of_study(url, name, *args, prog="mnist-results"):
    return json.loads(run(parse_args(["--storage", url, name, "--format", "json", *args], prog=prog)))


def rows_of(url, *args, prog="mnist-results"):
    return rows_of_study(url, "known", *args, prog=prog)


def test_rows_are_ranked_and_exact(db):
    _, url = db
    rows = rows_of(url)
    assert [(r["rank"], r["trial"], r["state"]) for r in rows] == [
        (1, 0, "complete"), (2, 2, "complete"), (3, 1, "complete"), (4, 3, "pruned"), (None, 4, "rejected"),
        (None, 5, "failed"), (None, 6, "running"),
    ]
    assert rows[0] == {
        "rank": 1, "trial": 0, "state": "complete", "best_acc": 99.45, "final_acc": 99.41,  # the objective, by name
        "min_last_k": 99.0, "val_min_last_k": 98.9, "best_epoch": 3, "reached_target": 3, "params": 7988, "model/widths": "s4", "optim.lr": 0.05,
        "epochs": 4,
        "seconds": 100.0, "note": None,
    }
    assert rows[4]["note"] == "44,286 parameters > budget.max_params=20,000" and rows[4]["params"] == 44286
    assert rows[5]["note"] == "RuntimeError: boom"


def test_summary_counts_times_and_savings(db):
    _, url = db
    study = optuna.load_study(study_name="known", storage=url)
    s = summary(study)
    assert s["trials"] == {"complete": 3, "pruned": 1, "raced": 0, "rejected": 1, "failed": 1, "running": 1, "waiting": 0}
    assert s["training_seconds"] == 325.0  # three full trials and the pruned one
    assert s["full_trial_seconds"] == 100.0
    assert s["saved_by_pruning_seconds"] == 75.0  # ran 1 of 4 epochs
    assert s["saved_by_rejecting_seconds"] == 100.0
    assert s["reached_target_under_budget"] == 1
    assert s["held_target_under_budget"] == 1  # trial 0: worst of its last 3 (99.0) meets its own target_acc (99.0)
    assert s["best"]["trial"] == 0 and s["best"]["params"] == 7988


@pytest.mark.parametrize(
    "args, trials",
    [
        (["--top", "2"], [0, 2]),
        (["--state", "pruned,rejected"], [3, 4]),
        (["--max-params", "8000"], [0, 1, 3, 5]),
        (["--min-acc", "99.25"], [0, 2]),
        (["--pareto"], [1, 0]),  # 4,938 at 99.2 and 7,988 at 99.45; wide is dominated by s4
        (["--pareto", "--acc", "min_last_k"], [1, 0, 2]),  # worst of the last 3: wide (99.1) beats s4 (99.0)
        (["--pareto", "--acc", "val_min_last_k"], [0]),  # only trial 0 was scored on a validation split
        (["--min-acc", "99.05", "--acc", "min_last_k"], [2]),
        (["--sort", "min_last_k"], [2, 0, 1, 3, 4, 5, 6]),  # 99.1, 99.0, 98.0, then those without it
        (["--sort", "val_min_last_k", "--top", "1"], [0]),
        (["--sort", "params", "--state", "complete"], [1, 0, 2]),
    ],
)
def test_filters_and_pareto(db, args, trials):
    assert [r["trial"] for r in rows_of(db[1], *args)] == trials


@pytest.mark.parametrize(
    "args, trials",
    [
        (["--min", "best_acc=99.25"], [0, 2]),  # mnist-results' --min-acc 99.25, on any column
        (["--min", "min_last_k=99.05"], [2]),
        (["--min", "min_last_k=99.0"], [0, 2]),  # at least: the bound itself is in
        (["--max", "params=7988", "--state", "complete"], [0, 1]),  # at most: the bound itself is in
        (["--min", "min_last_k_test_acc=99.0"], [0, 2]),  # the metric's own name stands for its column
        (["--min", "optim.lr=0.05", "--max", "optim.lr=0.1"], [0, 1]),  # a hyperparameter; both bounds
        (["--min", "best_acc=99", "--top", "1"], [0]),  # --top after the filters
    ],
)
def test_generic_filters_on_any_column(db, args, trials):
    assert [r["trial"] for r in rows_of(db[1], *args, prog="sweep-results")] == trials


def test_a_filter_on_a_column_the_study_lacks_or_a_bad_bound_is_one_clear_error(db, capsys):
    with pytest.raises(ResultsError, match="--min loss needs the 'loss' column"):
        rows_of(db[1], "--min", "loss=1", prog="sweep-results")
    with pytest.raises(SystemExit):
        parse_args(["known", "--max", "params"], prog="sweep-results")
    assert "'params': give COLUMN=NUMBER" in capsys.readouterr().err


def test_the_generic_command_speaks_of_no_app_and_mnist_results_keeps_its_shortcuts(db, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"], prog="sweep-results")
    generic = capsys.readouterr().out
    assert "--min COLUMN=VALUE" in generic and "--max-budget" in generic
    assert "mnist" not in generic.lower() and "--acc" not in generic and "--max-params" not in generic
    with pytest.raises(SystemExit):
        parse_args(["--help"], prog="mnist-results")
    shortcuts = capsys.readouterr().out
    assert "--min-acc" in shortcuts and "--acc {best_acc," in shortcuts and "--max-params" in shortcuts
    assert "$MNIST_SWEEP_STORAGE" in shortcuts.replace("\n", "").replace(" ", "")  # the name it had first, still read
    with pytest.raises(SystemExit):
        parse_args(["known", "--min-acc", "99"], prog="sweep-results")
    assert "--min-acc is mnist-results' shortcut" in capsys.readouterr().err


def test_csv_and_json_round_trip(db):
    _, url = db
    as_json = rows_of(url)
    text = run(parse_args(["--storage", url, "known", "--format", "csv"]))
    as_csv = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["trial"]) for r in as_csv] == [r["trial"] for r in as_json]
    assert [float(r["best_acc"]) if r["best_acc"] else None for r in as_csv] == [r["best_acc"] for r in as_json]
    assert as_csv[0]["model/widths"] == "s4" and as_csv[4]["state"] == "rejected"


def test_text_and_markdown_show_summary_and_table(db):
    _, url = db
    text = run(parse_args(["--storage", url, "known"]))
    assert "trials: 3 complete, 1 pruned, 1 rejected, 1 failed, 1 running" in text
    assert "saved by pruning: 1.2 min, by rejecting over-budget trials: 1.7 min" in text
    assert "best: trial 0, 99.45 with 7,988 parameters" in text
    assert "held it over the last k epochs (min_last_k): 1\nsmallest that held it: trial 0, 7,988 parameters (min_last_k 99.00)" in text
    md = run(parse_args(["--storage", url, "known", "--format", "markdown"]))
    assert "| rank | trial | state |" in md and "| 1 | 0 | complete | 99.45 |" in md


def test_listing_studies_and_reading_never_writes(db):
    tmp_path, url = db
    before = (tmp_path / "sweeps.db").read_bytes()
    listing = run(parse_args(["--storage", url]))
    assert "known" in listing and "99.45" in listing
    rows_of(url)
    assert (tmp_path / "sweeps.db").read_bytes() == before


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_plots_are_valid_pngs_with_the_expected_content(db, tmp_path):
    _, url = db
    from sweeper.plots import accuracy_vs_parameters, write_plots
    import matplotlib.pyplot as plt

    study = optuna.load_study(study_name="known", storage=url)
    written = write_plots(study, trial_rows(study), tmp_path / "plots")
    assert {p.name for p in written} == {"history.png", "importances.png", "parallel.png", "accuracy_vs_params.png", "curves.png"}
    for p in written:
        w, h = png_size(p)
        assert w > 300 and h > 200

    figures = []
    real_save = plt.Figure.savefig

    def keep(fig, path, **kw):
        figures.append(fig)
        return real_save(fig, path, **kw)

    plt.Figure.savefig = keep
    try:
        accuracy_vs_parameters(trial_rows(study), 20000, 99.4, tmp_path / "a.png", [])
        accuracy_vs_parameters(trial_rows(study), 20000, 99.4, tmp_path / "b.png", [], acc="min_last_k")
    finally:
        plt.Figure.savefig = real_save
    best, worst_last = (fig.axes[0] for fig in figures)
    assert best.get_xlabel() == "parameters" and best.get_ylabel() == "best test accuracy (%)"
    labels = best.get_legend_handles_labels()[1]
    assert labels == ["complete (3)", "pruned (1)", "rejected, over budget (1)", "Pareto front", "20,000 parameters", "99.4%"]
    assert worst_last.get_ylabel() == "test accuracy, worst of the last k epochs (%)"
    front = next(line for line in worst_last.get_lines() if line.get_label() == "Pareto front")
    assert list(front.get_xdata()) == [4938, 7988, 16454] and list(front.get_ydata()) == [98.0, 99.0, 99.1]


def test_a_two_objective_study_gets_importances_for_each_objective(tmp_path, app_conf):
    from sweeper.plots import write_plots
    import matplotlib.pyplot as plt

    study = optuna.create_study(study_name="two", storage=f"sqlite:///{tmp_path}/two.db", directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["min_last_k_test_acc", "n_params"])
    for widths, lr, acc, n in [("tiny", 0.02, 99.1, 4938), ("s4", 0.05, 99.4, 7988), ("wide", 0.1, 99.5, 16454),
                               ("tiny", 0.2, 98.9, 4938), ("s4", 0.01, 99.2, 7988)]:
        study.add_trial(optuna.trial.create_trial(
            params={"model/widths": widths, "optim.lr": lr}, distributions=SPACE, values=[acc, n],
            user_attrs={"n_params": n, "max_params": 20000, "min_last_k_test_acc": acc, "best_test_acc": acc,
                        "launched": True, "curve": [98.0, acc], "overrides": [f"model/widths={widths}", f"optim.lr={lr}"]}))
    figures = []
    real_save = plt.Figure.savefig

    def keep(fig, path, **kw):
        figures.append((path.name, fig))
        return real_save(fig, path, **kw)

    plt.Figure.savefig = keep
    try:
        written = write_plots(study, trial_rows(study), tmp_path / "plots", acc="min_last_k")
    finally:
        plt.Figure.savefig = real_save
    assert [p.name for p in written] == ["importances.png", "parallel.png", "accuracy_vs_params.png", "curves.png"]
    figs = dict(figures)
    assert figs["importances.png"].axes[0].get_legend_handles_labels()[1] == ["min_last_k_test_acc", "n_params"]
    text = run(parse_args(["--storage", f"sqlite:///{tmp_path}/two.db", "two"]))
    assert "saved by pruning: none (several objectives, never pruned)" in text and "best:" not in text
    with pytest.raises(ExportError, match="no single best trial"):
        export_trial(study, "two", **app_conf)
    export_trial(study, "two", number=1, **app_conf)
    header = (tmp_path / "conf" / "experiment" / "two.yaml").read_text().splitlines()[1]
    assert header.endswith("trial 1 (complete, min_last_k_test_acc=99.4, n_params=7988).")
    parallel = figs["parallel.png"].axes[0]
    assert [t.get_text() for t in parallel.get_xticklabels()] == ["min_last_k_test_acc", "model/widths", "optim.lr"]


def test_the_smallest_trial_that_held_is_the_one_with_most_margin_among_equals(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", direction="maximize")
    for number_params, held in [(7988, 99.5), (4938, 99.41), (4938, 99.45), (4563, 99.3)]:
        add(study, number_params, TrialState.COMPLETE, "tiny", 0.05,
            {"launched": True, "seconds": 60.0, "best_test_acc": held + 0.05, "epoch_reached_target": 9,
             "min_last_k_test_acc": held, "target_acc": 99.4})
    assert summary(study)["smallest_that_held"] == {"trial": 2, "params": 4938, "min_last_k": 99.45}


def test_export_writes_a_delta_that_composes_to_the_trials_config(db, tmp_path, app_conf):
    from sweeper.export import compose as compose_app

    _, url = db
    study = optuna.load_study(study_name="known", storage=url)
    message = export_trial(study, "best_known", **app_conf)
    assert "trial 0" in message
    exported = tmp_path / "conf" / "experiment" / "best_known.yaml"
    text = exported.read_text()
    assert text.startswith("# @package _global_")
    body = text.split("\n", 4)[4]  # after the four header lines: only what the trial chose
    assert body == "defaults:\n- override /model/widths: s4\n- _self_\noptim:\n  lr: 0.05\n"
    again = compose_app(app_conf["config_dir"], "train", ["+experiment=best_known"])
    assert again == compose_app(app_conf["config_dir"], "train", ["model/widths=s4", "optim.lr=0.05"])
    assert count_parameters(compose("model/widths=s4").model) == 7988
    with pytest.raises(ExportError, match="exists"):
        export_trial(study, "best_known", **app_conf)


@pytest.mark.parametrize("name", ["../../etc/x", "/tmp/x", "a/b", ""])
def test_export_names_are_file_names(db, app_conf, name):
    study = optuna.load_study(study_name="known", storage=db[1])
    with pytest.raises(ExportError, match="give a file name"):
        export_trial(study, name, **app_conf)


def error_line(argv, capsys) -> str:
    """mnist-results' error: exit status 1 and one line on stderr."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 1 and err.startswith("sweep-results: ") and err.count("\n") == 1
    return err


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda p, u: ["--storage", u, "nosuch"], "no study 'nosuch' in this database; studies: known"),
        (lambda p, u: ["--storage", f"sqlite:///{p}/missing.db", "known"], "no sweep database at"),
        (lambda p, u: ["--storage", u, "known", "--state", "done"], "--state done is not one of: complete"),
        (lambda p, u: ["--storage", u, "known", "--export", "x", "--trial", "99"], "--trial 99: no such trial"),
        (lambda p, u: ["--storage", u, "known", "--trial", "3"], "--trial picks the trial --export writes"),
        (lambda p, u: ["--storage", u, "known", "--top", "-1"], "--top -1: give a number of rows, 1 or more"),
        (lambda p, u: ["--storage", u, "known", "--plots", str(p / "sweeps.db")], "a file is there; give a folder"),
        (lambda p, u: ["--storage", u, "known", "--plots", "/proc/plots"], "--plots /proc/plots: cannot write there"),
        (lambda p, u: ["--storage", u, "known", "--export", "../../etc/x"], "--export '../../etc/x': give a file name"),
    ],
)
def test_errors_are_one_line_with_nonzero_exit(db, make_args, message, capsys):
    tmp_path, url = db
    assert message in error_line(make_args(tmp_path, url), capsys)


def test_databases_that_hold_no_sweep_are_named_as_such(tmp_path, capsys):
    con = sqlite3.connect(tmp_path / "other.db")
    con.execute("CREATE TABLE notes (x)")
    con.commit()
    con.close()
    assert "holds no sweep: it has no Optuna tables" in error_line(["--storage", f"sqlite:///{tmp_path}/other.db"], capsys)
    (tmp_path / "garbage.log").write_text("not a journal\n")
    line = error_line(["--storage", f"journal:///{tmp_path}/garbage.log", "x"], capsys)
    assert "garbage.log is not an Optuna journal: its first line is not a journal record" in line


def test_corrupted_database_is_reported(tmp_path, capsys):
    (tmp_path / "bad.db").write_bytes(b"this is not sqlite" * 100)
    assert error_line(["--storage", f"sqlite:///{tmp_path}/bad.db"], capsys) == (
        f"sweep-results: {tmp_path}/bad.db is not a readable SQLite database (corrupted, or not a sweep database)\n")


def test_database_of_an_incompatible_optuna_version_says_how_to_upgrade(db, capsys):
    tmp_path, url = db
    con = sqlite3.connect(tmp_path / "sweeps.db")
    con.execute("UPDATE alembic_version SET version_num = 'v0.9.0.a'")
    con.commit()
    con.close()
    assert "optuna storage upgrade" in error_line(["--storage", url, "known"], capsys)


@pytest.mark.slow
def test_results_command_line(db):
    tmp_path, url = db
    proc = run_cli(["sweeper.results", "--storage", url, "known", "--top", "1"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "trial" in proc.stdout and "99.45" in proc.stdout


def test_journal_storage_is_read_too(tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "sweeps.log")))
    study = optuna.create_study(study_name="known", storage=storage, direction="maximize")
    add(study, 7988, TrialState.COMPLETE, "s4", 0.05, {"launched": True, "best_test_acc": 99.1, "seconds": 5.0, "epochs_run": 1})
    rows = rows_of(f"journal:///{tmp_path}/sweeps.log")
    assert [(r["trial"], r["state"], r["best_acc"], r["params"]) for r in rows] == [(0, "complete", 99.1, 7988)]


def test_a_study_of_another_app_shows_no_mnist_columns_and_every_hyperparameter_in_csv(tmp_path):
    space = {"x": FloatDistribution(-1, 1), "y": CategoricalDistribution(["a", "b"]), "z": FloatDistribution(0, 1)}
    url = f"sqlite:///{tmp_path}/other.db"
    study = optuna.create_study(study_name="sphere", storage=url)  # minimize, no metric names
    for x, y, value in [(0.5, "a", 0.25), (-0.1, "b", 0.01), (0.9, "a", 0.81)]:
        study.add_trial(optuna.trial.create_trial(
            params={"x": x, "y": y, "z": 0.5}, distributions=space, value=value,
            intermediate_values={1: value * 2, 2: value}, user_attrs={"launched": True, "sweep_seconds": 1.5}))
    rows = json.loads(run(parse_args(["--storage", url, "sphere", "--format", "json"])))
    assert rows[0] == {"rank": 1, "trial": 1, "state": "complete", "objective": 0.01, "x": -0.1, "y": "b", "z": 0.5,
                       "steps": 2, "seconds": 1.5, "note": None}
    text = run(parse_args(["--storage", url, "sphere"]))
    header = text.split("\n\n")[1].splitlines()[0].split()
    assert header == ["rank", "trial", "state", "objective", "x", "y", "steps", "seconds", "note"]  # z is constant
    assert "target" not in text and "parameters" not in text and "best: trial 1, 0.01" in text
    as_csv = list(csv.DictReader(io.StringIO(run(parse_args(["--storage", url, "sphere", "--format", "csv"])))))
    assert [r["z"] for r in as_csv] == ["0.5"] * 3
    with pytest.raises(ResultsError, match="--pareto needs two things to trade off: this study has one objective and "
                                           "no budget measure"):
        run(parse_args(["--storage", url, "sphere", "--pareto"]))
    with pytest.raises(ResultsError, match="--max-budget needs a budget measure"):
        run(parse_args(["--storage", url, "sphere", "--max-budget", "10"]))


def test_the_pareto_front_drops_weakly_dominated_trials():
    from sweeper.table import pareto_front

    rows = [{"trial": n, "state": "complete", "best_acc": acc, "params": size} for n, acc, size in [
        (0, 99.4, 5000), (1, 99.3, 5000),  # same size, less accurate: dominated
        (2, 99.5, 8000), (3, 99.5, 9000),  # as accurate, larger: dominated
        (4, 99.6, 12000), (5, 99.2, 3000)]]
    assert [r["trial"] for r in pareto_front(rows)] == [5, 0, 2, 4]


def test_a_repeated_study_shows_each_repeat_aggregates_its_columns_and_what_racing_saved(tmp_path):
    url = f"sqlite:///{tmp_path}/sweeps.db"
    study = optuna.create_study(study_name="seeds", storage=url, direction="maximize")
    per_repeat = lambda accs: [{"min_last_k_test_acc": a, "best_test_acc": a + 0.05, "epoch_reached_target": 5,
                                "target_acc": 99.4, "n_params": 4938} for a in accs]
    repeated = {"launched": True, "repeats_n": 3, "repeats_aggregate": "min", "epochs_run": 20, "target_acc": 99.4,
                "epoch_reached_target": 5}
    # held on every seed: min 99.41; held on two of three (99.38): its columns say so; raced out after one repeat
    add(study, 4938, TrialState.COMPLETE, "tiny", 0.05,
        {**repeated, "best_test_acc": 99.41, "repeat_values": [99.42, 99.41, 99.45], "repeats_run": 3,
         "repeat_seconds": [100.0, 100.0, 100.0], "repeat_attrs": per_repeat([99.42, 99.41, 99.45])})
    add(study, 4000, TrialState.COMPLETE, "s4", 0.06,
        {**repeated, "best_test_acc": 99.38, "n_params": 4000, "repeat_values": [99.45, 99.38, 99.5], "repeats_run": 3,
         "repeat_seconds": [100.0, 100.0, 100.0],
         "repeat_attrs": [{**r, "n_params": 4000} for r in per_repeat([99.45, 99.38, 99.5])]})
    add(study, 3000, TrialState.PRUNED, "s4", 0.2,
        {**repeated, "raced_out_after": 1, "n_params": 3000, "repeat_values": [99.2], "repeats_run": 1,
         "repeat_seconds": [100.0], "repeat_attrs": [{**r, "n_params": 3000} for r in per_repeat([99.2])]})
    rows = trial_rows(study)
    assert [(r["trial"], r["state"], r["repeats"], r["min_last_k"]) for r in rows] == [
        (0, "complete", [99.42, 99.41, 99.45], 99.41), (1, "complete", [99.45, 99.38, 99.5], 99.38),
        (2, "raced", [99.2], 99.2)]
    assert rows[0]["best_acc"] == pytest.approx(99.46) and rows[0]["seconds"] == 300.0
    assert rows[2]["note"] == "raced out after 1 of 3 repeats" and rows[2]["rank"] == 3
    s = summary(study)
    assert s["trials"]["raced"] == 1 and s["saved_by_racing_seconds"] == pytest.approx(200.0)
    assert s["held_target_under_budget"] == 1 and s["smallest_that_held"]["trial"] == 0
    text = run(parse_args(["--storage", url, "seeds"]))
    assert "each trial: 3 repeats; columns aggregate them as the objective does, 'held' asks it of every repeat" in text
    assert ", by racing: 3.3 min (estimated from the median full trial)" in text


def test_plots_of_a_repeated_study_draw_every_repeat_in_one_colour_and_raced_trials_apart(tmp_path):
    from sweeper.plots import accuracy_vs_parameters, curves
    import matplotlib.pyplot as plt

    study = optuna.create_study(study_name="seeds", storage=f"sqlite:///{tmp_path}/sweeps.db", direction="maximize")
    runs = {0: [[98.0, 99.3], [98.5, 99.4], [97.9, 99.35]], 1: [[98.1, 99.1]]}
    add(study, 4938, TrialState.COMPLETE, "tiny", 0.05,
        {"launched": True, "repeats_n": 3, "repeats_aggregate": "min", "repeat_values": [99.3, 99.4, 99.35],
         "best_test_acc": 99.3, "curve": runs[0][-1], "repeat_attrs": [{"curve": c, "min_last_k_test_acc": c[-1]} for c in runs[0]]})
    add(study, 3000, TrialState.PRUNED, "s4", 0.2,
        {"launched": True, "repeats_n": 3, "repeats_aggregate": "min", "raced_out_after": 1, "repeat_values": [99.1],
         "curve": runs[1][0], "repeat_attrs": [{"curve": runs[1][0], "min_last_k_test_acc": 99.1}]})
    figures = []
    real_save = plt.Figure.savefig
    plt.Figure.savefig = lambda fig, path, **kw: (figures.append(fig), real_save(fig, path, **kw))
    try:
        curves(study, trial_rows(study), 99.4, tmp_path / "curves.png", [])
        accuracy_vs_parameters(trial_rows(study), 5000, 99.4, tmp_path / "a.png", [], acc="min_last_k")
    finally:
        plt.Figure.savefig = real_save
    ax = figures[0].axes[0]
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 2 and line.get_ydata()[0] < 99]
    assert [list(line.get_ydata()) for line in lines] == [*runs[0], *runs[1]]
    assert len({line.get_color() for line in lines[:3]}) == 1 and lines[3].get_color() != lines[0].get_color()
    assert [line.get_linestyle() for line in lines] == ["-", "-", "-", ":"]
    assert ax.get_legend_handles_labels()[1] == ["trial 0 (complete, 3 repeats)", "trial 1 (raced)"]
    assert "a line per repeat" in ax.get_title()
    assert ax.get_ylim()[0] > 98.0  # zoomed past the first epoch (the second half here), the target in view
    assert ax.get_ylim()[0] < 99.1 and ax.get_ylim()[1] > 99.4
    scatter = figures[1].axes[0]
    assert scatter.get_legend_handles_labels()[1][:3] == ["complete (1)", "pruned (0)", "raced out (1)"]


def test_a_queued_trial_shows_the_parameters_it_was_enqueued_with(tmp_path):
    study = optuna.create_study(study_name="q", storage=f"sqlite:///{tmp_path}/sweeps.db", direction="maximize")
    add(study, 4938, TrialState.COMPLETE, "tiny", 0.05, {"launched": True, "best_test_acc": 99.3})
    add(study, 3955, TrialState.COMPLETE, "s4", 0.02, {"launched": True, "best_test_acc": 99.2})
    study.enqueue_trial({"model/widths": "s4", "optim.lr": 0.03})  # what a repeated trial's carry-on is
    rows = trial_rows(study)
    assert [(r["trial"], r["state"], r["widths"], r["lr"]) for r in rows] == [
        (0, "complete", "tiny", 0.05), (1, "complete", "s4", 0.02), (2, "waiting", "s4", 0.03)]


@pytest.mark.parametrize("number", [0, 2])
def test_export_of_a_chosen_trial_that_is_not_the_best_composes_to_that_trials_config(tmp_path, app_conf, number):
    """Trial 0 is no falsy 'none given': it is exported as asked, and so is any other non-best trial."""
    from sweeper.export import compose as compose_app

    study = optuna.create_study(study_name="picked", storage=f"sqlite:///{tmp_path}/picked.db", direction="maximize")
    for widths, lr, acc in [("tiny", 0.1, 99.2), ("s4", 0.05, 99.45), ("wide", 0.02, 99.3)]:
        add(study, 0, TrialState.COMPLETE, widths, lr, {"launched": True, "best_test_acc": acc})
    assert study.best_trial.number == 1
    chosen = study.trials[number]
    message = export_trial(study, f"pick{number}", number=number, **app_conf)
    assert f"trial {number}" in message
    exported = compose_app(app_conf["config_dir"], "train", [f"+experiment=pick{number}"])
    expected = compose_app(app_conf["config_dir"], "train", chosen.user_attrs["overrides"])
    best = compose_app(app_conf["config_dir"], "train", study.best_trial.user_attrs["overrides"])
    for key in ("model", "optim"):  # key by key: the chosen trial's values, not the best trial's
        assert exported[key] == expected[key] and exported[key] != best[key]


def test_a_raced_trial_shows_its_repeats_aggregated_not_optunas_last_step_and_ranks_by_it(tmp_path):
    """Optuna stores a pruned trial's last per-step report as its value; for a raced trial that is a
    step of its first repeat (99.41 below), not what its repeats scored (min of 99.36, 99.18)."""
    study = optuna.create_study(study_name="raced", storage=f"sqlite:///{tmp_path}/sweeps.db", direction="maximize")
    for number, steps, scores in [(0, [99.2, 99.41], [99.36, 99.18]), (1, [99.1, 99.3], [99.3])]:
        trial = study.ask({"lr": FloatDistribution(0.01, 0.3)})
        for step, value in enumerate(steps, 1):
            trial.report(value, step)
        for key, value in {"repeats_n": 3, "repeats_aggregate": "min", "raced_out_after": len(scores),
                           "repeat_values": scores, "repeats_run": len(scores)}.items():
            trial.set_user_attr(key, value)
        study.tell(trial, state=TrialState.PRUNED)
    assert [t.value for t in study.trials] == [99.41, 99.3]  # what Optuna keeps
    rows = trial_rows(study)
    assert [(r["trial"], r["state"], r["objective"], r["repeats"]) for r in rows] == [
        (1, "raced", 99.3, [99.3]), (0, "raced", 99.18, [99.36, 99.18])]


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_raced_trials_rank_after_complete_ones_and_before_pruned_ones_whatever_the_values(tmp_path, direction):
    """A raced trial trained its finished repeats in full; a pruned one stopped part way: a step's value
    is no rival to a full training's, in either direction."""
    study = optuna.create_study(study_name="kinds", storage=f"sqlite:///{tmp_path}/sweeps.db", direction=direction)
    space = {"lr": FloatDistribution(0.01, 0.3)}
    best, worst = (0.1, 9.0) if direction == "minimize" else (9.0, 0.1)
    pruned = study.ask(space)
    pruned.report(best, 1)  # the best value of all, at step 1
    study.tell(pruned, state=TrialState.PRUNED)
    raced = study.ask(space)
    raced.report(worst, 1)
    for key, value in {"repeats_n": 3, "repeats_aggregate": "mean", "raced_out_after": 1, "repeat_values": [worst],
                       "repeats_run": 1}.items():
        raced.set_user_attr(key, value)
    study.tell(raced, state=TrialState.PRUNED)
    complete = study.ask(space)
    study.tell(complete, 5.0)
    rows = trial_rows(study)
    assert [(r["rank"], r["trial"], r["state"]) for r in rows] == [(1, 2, "complete"), (2, 1, "raced"), (3, 0, "pruned")]


@pytest.mark.parametrize("task_module, main_spec, main_file, expected", [
    ("my_pkg.app", None, None, {"module": "my_pkg.app", "script": None}),  # the app's module was imported
    ("__main__", "mnist_arch.train", None, {"module": "mnist_arch.train", "script": None}),  # python -m mnist_arch.train
    ("__main__", None, "my_app/app.py", {"module": None, "script": "ABS"}),  # python my_app/app.py
    ("__main__", "my_pkg.__main__", None, {"module": None, "script": None}),  # python -m my_pkg: not importable safely
])
def test_the_app_source_recorded_for_export_is_what_registers_its_schemas(monkeypatch, tmp_path, task_module,
                                                                          main_spec, main_file, expected):
    import importlib.machinery
    import sys
    import types

    from sweeper.export import app_source

    main = types.ModuleType("__main__")
    main.__spec__ = importlib.machinery.ModuleSpec(main_spec, None) if main_spec else None
    if main_file:
        main.__file__ = str(tmp_path / main_file)
    monkeypatch.setitem(sys.modules, "__main__", main)
    if expected["script"] == "ABS":
        expected = {**expected, "script": str((tmp_path / main_file).resolve())}
    assert app_source(task_module) == expected


SCHEMA_APP = '''\
from dataclasses import dataclass

import hydra
from hydra.core.config_store import ConfigStore


@dataclass
class AppConf:
    lr: float = 0.1
    width: int = 8


ConfigStore.instance().store(name="app_schema", node=AppConf)


@hydra.main(config_path="conf", config_name="app", version_base="1.3")
def main(cfg):
    raise SystemExit("the app's main must not run on export")


if __name__ == "__main__":
    main()
'''


@pytest.mark.parametrize("source", ["module", "script", "none"])
def test_export_in_a_fresh_process_loads_what_registers_the_apps_schema(tmp_path, source):
    """An app whose primary config is a structured schema composes only once its code has run; the
    export (a fresh process, nothing registered) loads the recorded module or script, else says what to give."""
    app = tmp_path / "schema_app"
    (app / "conf").mkdir(parents=True)
    (app / "__init__.py").write_text("")
    (app / "app.py").write_text(SCHEMA_APP)
    (app / "conf" / "app.yaml").write_text("defaults:\n  - app_schema\n  - _self_\nwidth: 16\n")
    url = f"sqlite:///{tmp_path}/sweeps.db"
    study = optuna.create_study(study_name="schema", storage=url, direction="maximize")
    study.add_trial(optuna.trial.create_trial(
        params={"lr": 0.05}, distributions={"lr": FloatDistribution(0.01, 0.3)}, value=1.0,
        user_attrs={"overrides": ["lr=0.05"]}))
    recorded = {"config_dir": str(app / "conf"), "config_name": "app", "command": "python -m schema_app.app",
                "module": "schema_app.app" if source == "module" else None,
                "script": str(app / "app.py") if source == "script" else None}
    study._storage.set_study_system_attr(study._study_id, "app_config", recorded)
    proc = run_cli(["sweeper.results", "--storage", url, "schema", "--export", "best"], cwd=tmp_path,
                   env={"PYTHONPATH": str(tmp_path)})
    exported = app / "conf" / "experiment" / "best.yaml"
    if source == "none":
        assert proc.returncode != 0 and not exported.exists()
        assert "Could not load 'app_schema'" in proc.stderr and "give --app-module" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "must not run" not in proc.stdout + proc.stderr
    assert exported.read_text().endswith("defaults:\n- _self_\nlr: 0.05\n")


def test_pareto_and_min_acc_default_to_the_accuracy_the_study_optimizes(tmp_path):
    """A study of the worst of the last 3 epochs: its front trades that, not the best epoch, against size."""
    url = f"sqlite:///{tmp_path}/sweeps.db"
    study = study_of_metric(url, "held", "min_last_k_test_acc")
    for size, best, held in [(4563, 99.43, 99.34), (4938, 99.39, 99.35)]:  # the larger peaks lower, holds higher
        trial = optuna.trial.create_trial(
            params={"model/widths": "tiny", "optim.lr": 0.05}, distributions=SPACE, state=TrialState.COMPLETE,
            value=held, user_attrs={"n_params": size, "best_test_acc": best, "min_last_k_test_acc": held,
                                    "launched": True})
        study.add_trial(trial)
    assert [r["trial"] for r in rows_of_study(url, "held", "--pareto")] == [0, 1]
    assert [r["trial"] for r in rows_of_study(url, "held", "--pareto", "--acc", "best_acc")] == [0]
    assert [r["trial"] for r in rows_of_study(url, "held", "--min-acc", "99.345")] == [1]


def test_an_exported_raced_trial_says_what_its_repeats_scored(tmp_path, app_conf):
    study = optuna.create_study(study_name="raced", storage=f"sqlite:///{tmp_path}/sweeps.db", direction="maximize")
    add(study, 3689, TrialState.PRUNED, "tiny", 0.07,
        {"launched": True, "repeats_n": 3, "repeats_aggregate": "min", "raced_out_after": 2,
         "repeat_values": [99.35, 99.31]}, [99.2, 99.35])
    export_trial(study, "raced", number=0, **app_conf)
    header = (tmp_path / "conf" / "experiment" / "raced.yaml").read_text().splitlines()[1]
    assert header == "# Exported from study 'raced', trial 0 (raced, objective=99.31 over 2 of 3 repeats, 3,689 parameters)."


@pytest.fixture(scope="module")
def long_study(tmp_path_factory) -> str:
    """1,500 trials of two parameters: about 100 KB in either format, well over the 64 KiB a pipe holds. In a journal file,
    which takes them in 3 s (SQLite: 30 s)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path_factory.mktemp("long") / "long.log"
    study = optuna.create_study(study_name="long", storage=JournalStorage(JournalFileBackend(str(path))),
                                direction="minimize")
    dist = {"x": FloatDistribution(0, 1), "second_stage_learning_rate": FloatDistribution(0, 1)}
    study.add_trials([optuna.trial.create_trial(params={"x": i / 1500, "second_stage_learning_rate": 1 - i / 1500},
                                                distributions=dist, value=i / 1500) for i in range(1500)])
    return f"journal:///{path}"


@pytest.mark.parametrize("fmt", ["text", "csv"])
def test_a_closed_pipe_ends_the_command_quietly_as_it_ends_any_unix_tool(tmp_path, long_study, fmt):
    """``sweep-results ... | head -1``: no BrokenPipeError traceback; the shell sees the pipe's own end (141)."""
    import os
    import signal
    import subprocess
    import sys

    from .support import REPO

    proc = subprocess.Popen([sys.executable, "-m", "sweeper.results", "--storage", long_study, "long", "--format", fmt],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, bufsize=0,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline()  # head -1 (unbuffered: the rest stays in the pipe, which cannot hold it)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == -signal.SIGPIPE and err == ""


def test_csv_ends_after_its_last_row(long_study, capsys):
    main(["--storage", long_study, "long", "--format", "csv", "--top", "3"])
    out = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 3 and out.endswith("\n") and not out.endswith("\n\n")
