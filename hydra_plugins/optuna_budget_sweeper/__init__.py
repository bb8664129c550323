"""``hydra/sweeper=optuna_budget``. Hydra instantiates sweepers only from the ``hydra_plugins`` namespace.

A lazy shim: Hydra imports every plugin module on every run (sweep or not), so this one imports
only the config schemas (Hydra and OmegaConf). Optuna, SQLAlchemy and the sweeper itself
(``sweeper/optuna_sweeper.py``) load when a sweep starts.
"""

from typing import Any, List

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from sweeper import config as _config  # noqa: F401  registers hydra/sweeper=optuna_budget and its groups
from sweeper.errors import report_sweeper_errors_in_one_line


class BudgetOptunaSweeper(Sweeper):
    def __init__(self, **kwargs: Any) -> None:
        from sweeper.optuna_sweeper import OptunaBudgetSweeper

        self.sweeper = OptunaBudgetSweeper(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        return self.sweeper.sweep(arguments)


class OneLineSweeperErrors(SearchPathPlugin):
    """Adds no search path: Hydra runs every SearchPathPlugin as an app starts, before its config is
    composed, and that is the one moment a plugin can set how the sweeper's errors (a misspelt
    ``hydra.sweeper`` key included) are printed: one line, in any app (``sweeper/errors.py``)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        report_sweeper_errors_in_one_line()
