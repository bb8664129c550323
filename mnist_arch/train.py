"""``mnist-train``: train one model from the composed config (or many with ``-m``).

    mnist-train                                   # the defaults: model=s4, 20 epochs
    mnist-train model=tiny trainer.epochs=5       # any override
    mnist-train --cfg job                         # print the composed config, train nothing

Writes ``metrics.json`` (per-epoch history and summary) into the Hydra run directory and returns
the configured objective, so a sweeper can optimise it.
"""

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict

import hydra
import hydra._internal.utils as hydra_internal
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from .config import CONF_DIR, PRIMARY_CONFIG
from .errors import one_line
from .trainer import fit

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def run(cfg: DictConfig) -> Dict[str, Any]:
    """Train per ``cfg`` with the callbacks it lists, write metrics.json, return the result."""
    callbacks = [instantiate(node) for node in cfg.trainer.callbacks.values()]
    result = fit(cfg, callbacks)
    out = Path(HydraConfig.get().runtime.output_dir) / METRICS_FILE
    out.write_text(json.dumps(result, indent=2))
    log.info(
        "best test acc %.2f%% (epoch %d), final %.2f%%, %s parameters, %.0fs; %s = %.4f -> %s",
        result["best_test_acc"], result["best_epoch"], result["final_test_acc"], f"{result['n_params']:,}",
        result["seconds"], result["objective_metric"], result["objective"], out,
    )
    return result


@hydra.main(config_path=CONF_DIR, config_name=PRIMARY_CONFIG, version_base="1.3")
def train_app(cfg: DictConfig) -> float:
    return run(cfg)["objective"]


USER_ERRORS = (HydraException, OmegaConfBaseException)


def _report_user_errors_in_one_line(func: Callable[[], Any]) -> Any:
    """Hydra's run_and_report, except that errors a user causes print as one line (exit 1).

    Anything else (a bug) keeps Hydra's traceback; HYDRA_FULL_ERROR=1 shows every traceback.
    """
    try:
        return func()
    except USER_ERRORS as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.stderr.write(f"Error: {one_line(exc)}\n")
        sys.exit(1)
    except Exception as exc:  # a bug: Hydra's own report, traceback included
        bug = exc

        def reraise() -> None:
            raise bug

        return _hydra_run_and_report(reraise)


_hydra_run_and_report = hydra_internal.run_and_report


def main() -> None:
    """The ``mnist-train`` console script."""
    hydra_internal.run_and_report = _report_user_errors_in_one_line  # Hydra's entry looks it up at call time
    train_app()


if __name__ == "__main__":
    main()
