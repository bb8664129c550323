"""``mnist-train``: train one model from the composed config (or many with ``-m``).

    mnist-train                                   # the defaults: model=s4, 20 epochs
    mnist-train model=tiny trainer.epochs=5       # any override
    mnist-train --cfg job                         # print the composed config, train nothing

Writes ``metrics.json`` (per-epoch history and summary) into the Hydra run directory and returns
the configured objective, so a sweeper can optimise it.
"""

import json
import logging
from pathlib import Path
from typing import Any, Dict

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from .config import CONF_DIR, PRIMARY_CONFIG
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
def main(cfg: DictConfig) -> float:
    return run(cfg)["objective"]


if __name__ == "__main__":
    main()
