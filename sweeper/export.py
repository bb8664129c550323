"""Export a trial as an experiment config that ``<app> +experiment=NAME`` reproduces.

The file is a delta, as a person would write it: the config-group choices the trial made go in
its defaults list (``override /model/widths: tiny``, or ``/search: frontier_holds`` for a group
the sweep added), its other overrides as values. Before the file is kept, it is composed and
checked to give exactly the trial's config; else nothing is written.

The app's config (folder and primary config name) is the one the sweep recorded on the study;
studies from before that record take ``--config-dir``, ``--config-name`` and ``--app-module`` (the
module whose import registers the app's structured configs). What registers them is recorded too:
the task function's module, the module run by ``python -m pkg.app``, or the script run by
``python path/app.py`` (loaded under another name, so its guarded main does not run).
"""

import importlib
import os
import re
import runpy
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.trial import TrialState

from .errors import one_line
from .repeats import RACED_OUT_ATTR, REPEATS_N_ATTR
from .table import shown_values
from .trials import OVERRIDES_ATTR, trial_kind

APP_CONFIG_ATTR = "app_config"  # study system attribute: {"config_dir", "config_name", "module", "command"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ExportError(Exception):
    pass


def compose(config_dir: str, config_name: str, overrides: List[str]) -> Dict[str, Any]:
    """The app's config for these overrides, resolved, without the hydra node."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=list(overrides))
    out = OmegaConf.to_container(cfg, resolve=True)
    out.pop("hydra", None)
    return out


def launch_command() -> str:
    """How the sweep was started, as a user types it: ``mnist-train``, ``python my_app/app.py``, ``python -m pkg.app``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name and not spec.name.startswith("__main__"):  # python -m pkg.app
        name = spec.name[:-len(".__main__")] if spec.name.endswith(".__main__") else spec.name
        return f"python -m {name}"
    if sys.argv and sys.argv[0].endswith(".py"):  # python path/to/app.py: the path as given
        return f"python {sys.argv[0]}"
    return Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "<app>"  # a console script


def app_source(task_module: Optional[str]) -> Dict[str, Optional[str]]:
    """What registers the app's structured configs (schemas) when imported or run: ``module`` (the
    task function's module; under ``python -m pkg.app``, where that is ``__main__``, the name it was
    run by) or, for ``python path/app.py``, ``script`` (its absolute path)."""
    if task_module and task_module != "__main__":
        return {"module": task_module, "script": None}
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and not spec.name.endswith("__main__"):  # python -m pkg.app
        return {"module": spec.name, "script": None}
    path = getattr(main, "__file__", None)
    if spec is None and path and path.endswith(".py"):  # python path/app.py
        return {"module": None, "script": str(Path(path).resolve())}
    return {"module": None, "script": None}  # python -m pkg (its __main__ runs the app when imported)


def record_app_config(study: optuna.Study, config: Any, module: Optional[str]) -> None:
    """Record on the study where the app's config lives, so a trial can be exported without asking."""
    sources = [s for s in config.hydra.runtime.config_sources if s.provider == "main" and s.schema == "file"]
    if not sources:
        return
    value = {"config_dir": sources[0].path, "config_name": config.hydra.job.config_name, **app_source(module),
             "command": launch_command()}
    if study._storage.get_study_system_attrs(study._study_id).get(APP_CONFIG_ATTR) != value:
        study._storage.set_study_system_attr(study._study_id, APP_CONFIG_ATTR, value)


def choose_trial(study: optuna.Study, number: Optional[int]) -> optuna.trial.FrozenTrial:
    trials = study.get_trials(deepcopy=False)  # pragma: no mutate (only read: a copy or not)
    if number is not None:
        match = [t for t in trials if t.number == number]
        if not match:
            raise ExportError(f"--trial {number}: no such trial in study {study.study_name!r} (0..{len(trials) - 1})")
        return match[0]
    if len(study.directions) > 1:
        raise ExportError("a multi-objective study has no single best trial: pick one with --trial N (see --pareto)")
    if not any(t.state == TrialState.COMPLETE for t in trials):
        raise ExportError(f"study {study.study_name!r} has no complete trial to export")
    return study.best_trial


def delta(overrides: List[str], config_dir: Path) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """(defaults-list entries, nested values) that an experiment file needs to apply these overrides."""
    defaults, values = [], {}
    for o in OverridesParser.create().parse_overrides(list(overrides)):
        key = o.key_or_group
        if (config_dir / key).is_dir():  # a config group: its choice goes in the defaults list
            choice = o.value()
            defaults.append({f"/{key}" if o.is_add() else f"override /{key}": choice})
            continue
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = o.value()
    return defaults, values


def export_trial(study: optuna.Study, name: str, number: Optional[int] = None, config_dir: Optional[str] = None,
                 config_name: Optional[str] = None, module: Optional[str] = None) -> str:
    trial = choose_trial(study, number)
    overrides = trial.user_attrs.get(OVERRIDES_ATTR)
    if overrides is None:
        raise ExportError(f"trial {trial.number} has no stored overrides (not run by the optuna_budget sweeper)")
    recorded = study._storage.get_study_system_attrs(study._study_id).get(APP_CONFIG_ATTR) or {}
    run = recorded.get("command") or "<app>"
    value = ", ".join(f"{n}={v:.4g}" for n, v in zip(study.metric_names or ["objective"], shown_values(trial) or []))
    if trial_kind(trial) == "raced":  # its finished repeats' aggregate, not Optuna's last step (table.shown_values)
        value += f" over {trial.user_attrs.get(RACED_OUT_ATTR)} of {trial.user_attrs.get(REPEATS_N_ATTR)} repeats"
    size = trial.user_attrs.get("n_params")
    size = f", {size:,} parameters" if size is not None and "n_params" not in value else ""
    about = (f"Exported from study {study.study_name!r}, trial {trial.number} "
             f"({trial_kind(trial)}{', ' + value if value else ''}{size}).")
    target = write_experiment(name, overrides, about, run, Path(config_dir or recorded.get("config_dir") or "conf"),
                              config_name or recorded.get("config_name") or "train", module or recorded.get("module"),
                              None if module else recorded.get("script"))
    return f"wrote {target}: trial {trial.number}; run it with: {run} +experiment={name}"


def write_experiment(name: str, overrides: List[str], about: str, run: str, conf: Path, primary: str,
                     module: Optional[str], script: Optional[str] = None) -> Path:
    """``<conf>/experiment/<name>.yaml`` applying ``overrides`` as a delta; kept only if it composes to their config."""
    if not NAME.match(name):
        raise ExportError(f"--export {name!r}: give a file name (letters, digits, '_', '-', '.'), not a path")
    if module:  # the app's module registers its structured configs (schemas) when imported
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise ExportError(f"the app's module {module!r} cannot be imported: {one_line(exc)}") from None
    elif script:  # run as a module of another name: its schemas registered, its guarded main not called
        sys.path.insert(0, str(Path(script).parent))  # as python puts it there for the script's own imports
        try:
            runpy.run_path(script, run_name="__sweep_export__")
        except Exception as exc:
            raise ExportError(f"the app's script {script} cannot be loaded: {one_line(exc)}") from None
        finally:
            sys.path.remove(str(Path(script).parent))
    if not (conf / f"{primary}.yaml").is_file():
        raise ExportError(f"the app's config {conf / primary}.yaml is not there; give --config-dir and --config-name")
    target = conf / "experiment" / f"{name}.yaml"
    if target.exists():
        raise ExportError(f"{target} exists; choose another name or delete it")
    try:
        wanted = compose(str(conf), primary, overrides)
    except Exception as exc:
        hint = ("; if the app registers structured configs, give --app-module (the module that registers them)"
                if not (module or script) else "")
        raise ExportError(f"the overrides no longer compose: {one_line(exc).rstrip('.')}{hint}") from None
    defaults, values = delta(overrides, conf)
    adds = [d for d in defaults if not next(iter(d)).startswith("override ")]  # Hydra wants overrides last
    body = OmegaConf.to_yaml(OmegaConf.create({"defaults": [*adds, *(d for d in defaults if d not in adds), "_self_"],
                                               **values}))
    header = f"# @package _global_\n# {about}\n# Its overrides: {' '.join(overrides)}\n# Run: {run} +experiment={name}\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".yaml", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(header + body)
        try:
            again = compose(str(conf), primary, [f"+experiment={Path(tmp).stem}"])
        except Exception as exc:
            raise ExportError(f"the exported file does not compose ({one_line(exc)}); nothing written") from None
        if again != wanted:
            primary_defaults = OmegaConf.load(conf / f"{primary}.yaml").get("defaults") or []
            hint = ("; the app's primary config has a defaults list without _self_: add '- _self_' as its last "
                    "entry, so an experiment merges over it" if "_self_" not in primary_defaults else "")
            raise ExportError(f"the exported file does not compose to the trial's config; nothing written{hint}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
