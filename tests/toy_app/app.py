"""A cheap task function for testing the sweeper's machinery (failures, kills, workers) in seconds.

    python -m tests.toy_app.app -m x=choice(0,1,2) hydra.sweeper.storage=sqlite:///t.db

Returns ``x``; ``x`` listed in ``nan_on`` returns NaN, in ``raise_on`` raises. Sleeps ``sleep`` seconds.
"""

import time

import hydra
from omegaconf import DictConfig

import sweeper.config  # noqa: F401  (the sweeper's configs; Hydra also finds them through hydra_plugins)


@hydra.main(config_path="conf", config_name="toy", version_base="1.3")
def main(cfg: DictConfig) -> float:
    time.sleep(cfg.sleep)
    if cfg.x in cfg.raise_on:
        raise RuntimeError(f"boom at x={cfg.x}")
    if cfg.x in cfg.nan_on:
        return float("nan")
    return float(cfg.x)


if __name__ == "__main__":
    main()
