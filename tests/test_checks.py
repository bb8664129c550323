"""The sweeper's settings checked before any study is opened (sweeper.checks): each key at its edges, and the
line that names the value and what is allowed."""

import pytest

from sweeper.checks import check_objectives, check_settings
from sweeper.errors import SweepError

GOOD = dict(n_trials=1, n_jobs=1, max_failure_rate=0.0, max_rejected_streak=1, heartbeat_interval=0.5,
            storage_patience=0, grace_period=0.6, n_complete_trials=None, study_name=None)


@pytest.mark.parametrize("edge", [
    {}, {"max_failure_rate": 1.0}, {"max_failure_rate": 0.5}, {"n_complete_trials": 1}, {"study_name": "s"},
    {"study_name": 0}, {"n_trials": 10 ** 6, "n_jobs": 64, "max_rejected_streak": 10 ** 6, "storage_patience": 3600},
])
def test_settings_at_their_edges_are_accepted(edge):
    check_settings({**GOOD, **edge})


@pytest.mark.parametrize("bad, said", [
    ({"n_trials": 0}, "hydra.sweeper.n_trials=0 is out of range: it must be >= 1"),
    ({"n_jobs": 0}, "hydra.sweeper.n_jobs=0 is out of range: it must be >= 1"),
    ({"n_jobs": -2}, "hydra.sweeper.n_jobs=-2 is out of range: it must be >= 1"),
    ({"max_failure_rate": -0.01}, "hydra.sweeper.max_failure_rate=-0.01 is out of range: it must be between 0 and 1"),
    ({"max_failure_rate": 1.01}, "hydra.sweeper.max_failure_rate=1.01 is out of range: it must be between 0 and 1"),
    ({"max_rejected_streak": 0}, "hydra.sweeper.max_rejected_streak=0 is out of range: it must be >= 1"),
    ({"heartbeat_interval": 0, "grace_period": 1},
     "hydra.sweeper.heartbeat_interval=0 is out of range: it must be > 0"),
    ({"storage_patience": -1}, "hydra.sweeper.storage_patience=-1 is out of range: it must be >= 0"),
    ({"grace_period": 0.5}, "hydra.sweeper.grace_period=0.5 must be more than heartbeat_interval=0.5"),
    ({"grace_period": 0.4}, "hydra.sweeper.grace_period=0.4 must be more than heartbeat_interval=0.5"),
    ({"n_complete_trials": 0}, "hydra.sweeper.n_complete_trials=0 is out of range: it must be >= 1, or null "
                               "(end at n_trials only)"),
    ({"study_name": ""}, "hydra.sweeper.study_name is empty; give a name, or null for the app's job name"),
    ({"study_name": "  "}, "hydra.sweeper.study_name is empty; give a name, or null for the app's job name"),
    # the first key out of range is the one named
    ({"n_jobs": 0, "n_trials": 0, "study_name": ""}, "hydra.sweeper.n_trials=0 is out of range: it must be >= 1"),
])
def test_a_setting_out_of_range_is_one_line_naming_it(bad, said):
    with pytest.raises(SweepError) as info:
        check_settings({**GOOD, **bad})
    assert str(info.value) == said


def test_objectives_are_one_name_per_direction_each_a_metric_the_app_reports():
    check_objectives(None, ["acc"], ["maximize", "minimize"])  # no names: the returned values by position
    check_objectives(["acc", "loss"], None, ["maximize", "minimize"])  # no metrics said: any name
    check_objectives(["loss"], ["acc", "loss"], ["minimize"])
    with pytest.raises(SweepError) as info:
        check_objectives(["acc"], None, ["maximize", "minimize"])
    assert str(info.value) == ("hydra.sweeper.objectives has 1 names for 2 directions (maximize/minimize): "
                               "give one per direction")
    with pytest.raises(SweepError) as info:
        check_objectives(["acc", "loss", "f1"], ["acc"], ["maximize"])
    assert str(info.value).startswith("hydra.sweeper.objectives has 3 names for 1 directions (maximize)")
    with pytest.raises(SweepError) as info:
        check_objectives(["f1", "acc", "auc"], ["acc", "loss"], ["maximize"] * 3)
    assert str(info.value) == ("hydra.sweeper.objectives: f1, auc is not a metric the app reports; "
                               "it reports: acc, loss")
