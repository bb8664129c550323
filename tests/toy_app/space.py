"""A custom search space for the toy app, as hydra-optuna-sweeper's ``custom_search_space`` takes one."""


def steps_up_to_x(cfg, trial) -> None:
    trial.suggest_int("steps", 1, int(cfg.x))
