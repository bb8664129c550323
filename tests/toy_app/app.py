"""A cheap task function for testing the sweeper's machinery (failures, kills, workers, pruning) in seconds.

    python -m tests.toy_app.app -m 'x=choice(0,1,2)' hydra.sweeper.storage=sqlite:///t.db

Returns ``x`` (``returns=tuple``: ``(x, -x)``; ``returns=dict``: ``{v0: x, v1: -x}``); ``x`` listed in
``nan_on`` returns NaN, in ``raise_on`` raises; ``per_seed[seed]`` (where listed) is added to the value,
the known seed noise the repeats tests need; a job whose seed is ``interrupt_on_seed`` is
interrupted as by Ctrl-C; ``send_signal=SIGTERM`` (or another name) sends that signal to its own
process and waits for it to act, as a ``kill`` from outside would. Sleeps ``sleep`` seconds. With ``steps`` > 0 it
reports ``x * step / steps`` after each step through the sweeper's public API and stops when
the pruner says so. With ``checkpoint=true`` it saves ``{step, value}`` after each step through
``trial.checkpoint`` and resumes from it, recording on its trial the steps it ran (``steps_ran``); ``stop_after_step=k`` (with ``stop_signal``, default SIGINT) stops
the job after step ``k``'s checkpoint, as Ctrl-C or ``kill`` would (only the job whose seed is
``stop_on_seed``, where set); ``hang_after_step=k`` sleeps an hour after step ``k``'s checkpoint (a long step under
way, for a kill from outside); ``break_database_after_step=k`` moves the sweep's SQLite file away after
step ``k``'s checkpoint (at once, in a job resumed past ``k``), as an outage would (``restore_database_after_step=j`` puts it back after step ``j``'s). Its config has a ``model:`` key and a list ``trainer.callbacks`` that mean
nothing to the sweeper.
"""

import json
import os
import signal
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sweeper.api import current_trial


def break_database(cfg: DictConfig) -> None:
    """Move the sweep's SQLite file aside (a folder takes its name) and drop the sweep's pooled connections,
    as a database server going away would; the test puts it back."""
    from sweeper.api import ACTIVE_STUDIES
    from sweeper.storage import local_file

    path = local_file(HydraConfig.get().sweeper.storage)
    path.rename(path.with_name(path.name + ".away"))
    path.mkdir()
    for study in ACTIVE_STUDIES.values():
        study._storage._backend.engine.dispose()


def restore_database(cfg: DictConfig) -> None:
    """Put back what ``break_database`` moved aside: the outage is over."""
    from sweeper.storage import local_file

    path = local_file(HydraConfig.get().sweeper.storage)
    from sweeper.api import ACTIVE_STUDIES

    path.rmdir()
    path.with_name(path.name + ".away").rename(path)
    for study in ACTIVE_STUDIES.values():  # connections opened on the folder in its place go
        study._storage._backend.engine.dispose()


@hydra.main(config_path="conf", config_name="toy", version_base="1.3")
def main(cfg: DictConfig):
    trial = current_trial()
    if trial is not None:
        trial.set_user_attr("model_width", cfg.model.width)
        trial.set_user_attr("optimizer", cfg.optimizer.name)
    first = 1
    state_file = Path(HydraConfig.get().runtime.output_dir) / "state.json" if cfg.checkpoint else None
    if state_file is not None and trial is not None and trial.checkpoint.load(state_file) is not None:
        first = json.loads(state_file.read_text())["step"] + 1
    ran = list(trial.user_attrs.get("steps_ran", [])) if trial is not None else []  # read once: it may go away
    for step in range(first, cfg.steps + 1):
        if step == first > 1 and cfg.break_database_after_step is not None and cfg.break_database_after_step < first:
            break_database(cfg)  # resumed past that step: the outage is under way as the job goes on
        time.sleep(cfg.sleep / cfg.steps)
        ran.append(step)
        if trial is not None:
            trial.set_user_attr("steps_ran", ran)
        if trial is not None and trial.report(cfg.x * step / cfg.steps, step, last=step == cfg.steps):
            return float("nan")  # pruned: the sweeper records PRUNED whatever is returned
        if state_file is not None and trial is not None:
            state_file.write_text(json.dumps({"step": step, "value": cfg.x * step / cfg.steps}))
            trial.checkpoint.save(state_file, step)
        if step == cfg.hang_after_step:
            time.sleep(3600)  # a long step under way: the test kills the job here
        if step == cfg.break_database_after_step:  # the database goes away under the running sweep
            break_database(cfg)
        if step == cfg.restore_database_after_step:
            restore_database(cfg)
        if step == cfg.stop_after_step and cfg.stop_on_seed in (None, cfg.seed):
            os.kill(os.getpid(), getattr(signal, cfg.stop_signal))
            time.sleep(30)  # the handler acts at the next bytecode; this sleep is never finished
            raise RuntimeError(f"{cfg.stop_signal} was not handled")
    if not cfg.steps:
        time.sleep(cfg.sleep)
    if cfg.send_signal:
        os.kill(os.getpid(), getattr(signal, cfg.send_signal))
        time.sleep(30)  # the handler acts at the next bytecode; this sleep is never finished
        raise RuntimeError(f"{cfg.send_signal} was not handled")
    if cfg.interrupt_on_seed is not None and cfg.seed == cfg.interrupt_on_seed:
        raise KeyboardInterrupt  # what Ctrl-C raises in the process running the job
    if cfg.x in cfg.raise_on:
        raise RuntimeError(f"boom at x={cfg.x}")
    if cfg.x in cfg.nan_on:
        return float("nan")
    value = float(cfg.x) + (cfg.per_seed[cfg.seed] if 0 <= cfg.seed < len(cfg.per_seed) else 0.0)
    if trial is not None:
        trial.set_user_attr("seed_run", cfg.seed)
    if cfg.returns == "tuple":
        return value, -value
    if cfg.returns == "dict":
        return {"v0": value, "v1": -value}
    return value


if __name__ == "__main__":
    main()
