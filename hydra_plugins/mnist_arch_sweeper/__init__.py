"""Hydra instantiates sweepers only from the ``hydra_plugins`` namespace; all logic lives in ``sweeper/``."""

from sweeper import config as _config  # noqa: F401  registers hydra/sweeper=optuna_budget and its groups
from sweeper import optuna_sweeper


class BudgetOptunaSweeper(optuna_sweeper.BudgetOptunaSweeper):
    """``hydra/sweeper=optuna_budget``: see sweeper/optuna_sweeper.py."""
