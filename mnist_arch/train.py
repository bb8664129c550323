"""``mnist-train``: train one model from the composed config (or many with ``-m``).

    mnist-train                                   # the defaults: model=s4, 20 epochs
    mnist-train model=tiny trainer.epochs=5       # any override
    mnist-train --cfg job                         # print the composed config, train nothing

Writes ``metrics.json`` (per-epoch history and summary) into the Hydra run directory and returns
the configured objective, so a sweeper can optimise it.
"""

import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import hydra
import hydra._internal.utils as hydra_internal
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from .config import CONF_DIR, PRIMARY_CONFIG
from .errors import ConfigError, report_in_one_line
from .tracking import check_tracking, open_tracker, refuse_written_password
from .trainer import fit

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def run(cfg: DictConfig) -> Dict[str, Any]:
    """Train per ``cfg`` with the callbacks it lists, write metrics.json, return the result.

    A run never reuses a folder that holds a finished run: its metrics.json would be overwritten.
    """
    hydra_cfg = HydraConfig.get()
    out = Path(hydra_cfg.runtime.output_dir) / METRICS_FILE
    if out.exists():
        raise ConfigError(f"{out.parent} already holds a finished run ({METRICS_FILE}); give another hydra.run.dir")
    check_tracking(cfg)  # before any work
    callbacks = [instantiate(node) for node in cfg.trainer.callbacks.values()]
    tracker = open_tracker(cfg)
    try:
        result = fit(cfg, [*callbacks, tracker])
    except BaseException as exc:  # failed or interrupted: the tracked run says so
        tracker.fail(exc)
        raise
    record = {"seed": cfg.seed, "overrides": list(hydra_cfg.overrides.task), **result}
    tmp = out.with_name(f".{METRICS_FILE}.part")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(out)  # never half-written
    tracker.finish([out])
    log.info(
        "best test acc %.2f%% (epoch %d), final %.2f%%, %s parameters, %.0fs; %s = %.4f -> %s",
        result["best_test_acc"], result["best_epoch"], result["final_test_acc"], f"{result['n_params']:,}",
        result["seconds"], result["objective_metric"], result["objective"], out,
    )
    return result


@hydra.main(config_path=CONF_DIR, config_name=PRIMARY_CONFIG, version_base="1.3")
def train_app(cfg: DictConfig) -> float:
    return run(cfg)["objective"]


def _run_and_report(func: Callable[[], Any]) -> Any:
    """Hydra's run_and_report, except that errors a user causes print as one line (exit 1).

    Anything else (a bug) keeps Hydra's report with its traceback.
    """
    try:
        return report_in_one_line("Error: ", func)
    except Exception as exc:  # a bug: Hydra's own report, traceback included
        bug = exc

        def reraise() -> None:
            raise bug

        return _hydra_run_and_report(reraise)


_hydra_run_and_report = hydra_internal.run_and_report


def main() -> None:
    """The ``mnist-train`` console script.

    Hydra offers no public hook for how ``@hydra.main`` reports errors: its own report prints a
    multi-line message for config errors (composition, overrides). So the one function it calls
    for that is replaced, for this command only; Hydra looks it up at call time.
    """
    hydra_internal.run_and_report = _run_and_report
    report_in_one_line("Error: ", lambda: refuse_passwords_in(sys.argv[1:]))
    train_app()


def refuse_passwords_in(args: List[str]) -> None:
    """A password in a ``tracking.uri=`` override is refused before Hydra writes the command line to disk."""
    for arg in args:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") == "tracking.uri":
            refuse_written_password(value)


if __name__ == "__main__":
    main()
