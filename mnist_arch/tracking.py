"""Experiment tracking for a run (``tracking=none|mlflow|tensorboard``): params, per-epoch curves, results.

``open_tracker(cfg)`` gives the tracker the config asks for; ``run`` (train.py) passes it to the
trainer as an epoch callback (it opens its run in ``on_train_start``, once the config is checked
and the model is within budget, so a rejected config leaves no run behind) and calls ``finish``
once ``metrics.json`` is written (or ``fail`` when the run raised). A tracker never stops
training: the first error it meets is one warning line, and it logs nothing more for that run.

Where a run is in a sweep, it is read from Hydra's own config of the job (``hydra.mode``, the
sweep folder, ``hydra.job.num``, and the sweeper's ``study_name`` and ``repeats`` where the
sweeper has those keys), so this works under any sweeper and launcher:

- MLflow: one parent run per study (found again by its tags when the sweep resumes), one run per
  trial nested under it; with ``hydra.sweeper.repeats``, each repeat is a run nested under its
  trial's run, and the trial's run holds the repeats' aggregate of each final metric so far.
  Params are the composed config's keys, flattened (``model.widths.multiplier``); per-epoch
  metrics are logged with ``step=epoch``; ``metrics.json`` and the composed config are artifacts.
- TensorBoard: one event folder per trial under ``<sweep folder>/tensorboard/`` (``trial_3``,
  with repeats ``trial_3/seed_2``), so ``tensorboard --logdir <sweep folder>`` overlays them.

A single run (no ``-m``) logs the same way, as one run with no parent.
"""

import logging
import os
import re
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence
from urllib.parse import unquote, urlsplit

from omegaconf import DictConfig, ListConfig, OmegaConf

from .errors import ConfigError, squashed

log = logging.getLogger(__name__)

KINDS = ("none", "mlflow", "tensorboard")  # each tracker's package and extra ([mlflow], [tensorboard]) share its name
# sweeper.repeats.AGGREGATES, which this room may not import (the app never imports the sweeper)
AGGREGATES: Dict[str, Callable[[Sequence[float]], float]] = {
    "mean": statistics.fmean, "min": min, "max": max, "median": statistics.median,
}

PASSWORD_QUERY = re.compile(r"([?&](?:password|passwd|pwd)=)[^&#]*", re.IGNORECASE)
# tags by which runs are found again (a resumed sweep, the next repeat of a trial)
STUDY_TAG, STORAGE_TAG, TRIAL_TAG, ROLE_TAG = "sweep.study", "sweep.storage", "sweep.trial", "sweep.role"


class SweepPlace:
    """Where a job stands: a single run, or trial ``trial`` of study ``study`` (one repeat of it when ``repeat_key``)."""

    def __init__(self) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        self.study: Optional[str] = None
        self.trial: Optional[int] = None
        self.storage: Optional[str] = None
        self.repeat_key: Optional[str] = None
        self.aggregate = "mean"
        self.run_dir = Path.cwd()
        self.sweep_dir: Optional[Path] = None
        if not HydraConfig.initialized():
            return
        hc = HydraConfig.get()
        self.run_dir = Path(hc.runtime.output_dir)
        if hc.mode != RunMode.MULTIRUN or hc.job.get("num") is None:
            return
        self.sweep_dir = Path(hc.sweep.dir)
        self.trial = int(hc.job.num)
        sweeper = hc.sweeper
        self.study = OmegaConf.select(sweeper, "study_name", default=None) or hc.job.name
        storage = OmegaConf.select(sweeper, "storage", default=None)
        self.storage = masked_uri(storage) if storage else "in-memory"
        if int(OmegaConf.select(sweeper, "repeats.n", default=1) or 1) > 1:  # optuna_budget's repeats
            self.repeat_key = str(OmegaConf.select(sweeper, "repeats.key", default="seed"))
            self.aggregate = str(OmegaConf.select(sweeper, "repeats.aggregate", default="mean"))

    @property
    def in_sweep(self) -> bool:
        return self.trial is not None


def masked_uri(uri: str) -> str:
    """The URI with any password (``user:pw@host`` or ``?password=``) replaced by ***, for logs and tags."""
    parts = urlsplit(uri)
    if parts.password is not None:
        uri = uri.replace(parts.netloc, f"{parts.username or ''}:***@{parts.netloc.rsplit('@', 1)[1]}", 1)
    return PASSWORD_QUERY.sub(r"\1***", uri)


def passwords_in(uri: str) -> List[str]:
    """Every password the URI holds, as written and percent-decoded (a library's error may show either)."""
    found = [p for p in [urlsplit(uri).password, *(m.group(0).split("=", 1)[1] for m in PASSWORD_QUERY.finditer(uri))]
             if p]
    return sorted({*found, *(unquote(p) for p in found)}, key=len, reverse=True)  # longest first: no partial leftovers


def has_password(uri: str) -> bool:
    return masked_uri(uri) != uri


def check_tracking(cfg: DictConfig) -> None:
    """Before any work: a known kind, its package installed, no password written in the config or command line.

    The URI is checked as written, before interpolation: one from ``${oc.env:...}`` is fine.
    """
    kind = cfg.tracking.kind
    if kind not in KINDS:
        raise ConfigError(f"tracking.kind={kind!r} is not one of: {', '.join(KINDS)}")
    if kind == "none":
        return
    try:
        __import__(kind)
    except ImportError:
        raise ConfigError(f"tracking={kind} needs the {kind} package: pip install -e '.[{kind}]'") from None
    if kind == "mlflow":
        refuse_written_password(OmegaConf.to_container(cfg.tracking, resolve=False).get("uri"))


def refuse_written_password(written: Any) -> None:
    """A tracking URI as written in a config or command line (Hydra saves both to disk) must hold no password."""
    if isinstance(written, str) and "${" not in written and has_password(written):
        raise ConfigError(f"tracking.uri={masked_uri(written)!r} holds a password, and Hydra writes the command line "
                          "and config to disk: put the URI in $MLFLOW_TRACKING_URI (or the password in "
                          "MLFLOW_TRACKING_PASSWORD) instead")


def flat_params(cfg: DictConfig) -> Dict[str, str]:
    """The composed config as ``dotted.key -> value`` strings (lists kept whole: ``[[8, 16], [16]]``)."""
    out: Dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, DictConfig):
            for key in node:
                walk(node[key], f"{prefix}{key}.")
        else:
            value = OmegaConf.to_container(node, resolve=True) if isinstance(node, ListConfig) else node
            out[prefix[:-1]] = str(value)

    walk(cfg, "")
    return out


def numbers(record: Dict[str, Any]) -> Dict[str, float]:
    """The numeric entries of an epoch record or a result (bools, None, ``epoch`` and ``epochs`` left out)."""
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "epochs")}


def final_metrics(result: Dict[str, Any]) -> Dict[str, float]:
    """A run's summary figures as metrics; its total ``seconds`` is ``run_seconds`` (epochs log their own)."""
    figures = numbers({k: v for k, v in result.items() if k not in ("history", "objective")})
    figures["run_seconds"] = figures.pop("seconds", 0.0)
    return figures


class Tracker:
    """Tracking off: every call does nothing. The trackers below keep this interface."""

    kind = "none"

    def on_train_start(self) -> None:
        return None

    def on_epoch_end(self, epoch: int, record: Dict[str, Any]) -> None:
        return None

    def on_train_end(self, result: Dict[str, Any]) -> None:
        return None

    def finish(self, files: Sequence[Path]) -> None:
        return None

    def fail(self, exc: BaseException) -> None:
        return None


class GuardedTracker(Tracker):
    """A tracker whose every call is guarded: the first error is one warning line, then it goes quiet."""

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        self.broken = False
        self.secrets = [secret for secret in secrets if secret]  # never shown, even in a library's error text

    def guard(self, what: str, fn: Callable[[], Any]) -> Any:
        if self.broken:
            return None
        try:
            return fn()
        except Exception as exc:
            self.broken = True
            text = squashed(exc)
            for secret in self.secrets:
                text = text.replace(secret, "***")
            log.warning("tracking=%s could not %s; the run goes on untracked: %s: %s", self.kind, what,
                        type(exc).__name__, text[:300])
            return None


class MLflowTracker(GuardedTracker):
    kind = "mlflow"

    def __init__(self, cfg: DictConfig, place: SweepPlace):
        t = cfg.tracking
        self.uri = str(t.uri)
        super().__init__(secrets=passwords_in(self.uri))
        self.cfg, self.place = cfg, place
        # MLflow retries an unreachable server for minutes by default; a tracker must not hold training up.
        self.http_limits = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(t.request_timeout_s),
                            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(t.request_retries)}
        self.client: Any = None
        self.run_id: Optional[str] = None
        self.trial_run_id: Optional[str] = None  # with repeats: the trial's run, parent of this repeat's
        self.experiment_id: Optional[str] = None

    def guard(self, what: str, fn: Callable[[], Any]) -> Any:
        """Each call to MLflow under the configured HTTP limits (where the environment sets none)."""
        unset = [k for k in self.http_limits if k not in os.environ]
        os.environ.update({k: self.http_limits[k] for k in unset})
        try:
            return super().guard(what, fn)
        finally:
            for key in unset:
                os.environ.pop(key, None)

    def on_train_start(self) -> None:
        self.guard(f"start a run at {masked_uri(self.uri)}", self._start)

    def _start(self) -> None:
        """This job's run: a single run; a trial's run under the study's; or a repeat's under its trial's."""
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = self.experiment_id = self._experiment(str(self.cfg.tracking.experiment))
        params = flat_params(self.cfg)
        place = self.place
        if not place.in_sweep:
            name, tags = place.run_dir.name, {ROLE_TAG: "run"}
        else:
            name = f"trial {place.trial}"
            tags = {STUDY_TAG: place.study, TRIAL_TAG: str(place.trial), "mlflow.parentRunId": self._parent(experiment),
                    ROLE_TAG: "trial"}
            if place.repeat_key is not None:
                self.trial_run_id = self._find_or_create(experiment, tags, name, lambda run_id: self._log(
                    run_id, params={k: v for k, v in params.items() if k != place.repeat_key}))
                name = f"{name} {place.repeat_key} {params.get(place.repeat_key)}"
                tags = {**tags, ROLE_TAG: "repeat", "mlflow.parentRunId": self.trial_run_id}
        self.run_id = self.client.create_run(experiment, run_name=name, tags=tags).info.run_id
        self._log(params=params)
        log.info("tracking: mlflow run %s at %s (experiment %s)", self.run_id, masked_uri(self.uri),
                 self.cfg.tracking.experiment)

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):  # a local store: artifacts beside the database, not in the cwd
            location = (Path(self.uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception:  # another worker created it meanwhile
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _parent(self, experiment: str) -> str:
        """The study's parent run: the one a first job created (a resumed sweep finds it again), else a new one."""
        place = self.place
        tags = {STUDY_TAG: place.study, STORAGE_TAG: place.storage, ROLE_TAG: "study"}

        def describe(run_id: str) -> None:
            self.client.log_batch(run_id, tags=self._tags({"sweep.dir": str(place.sweep_dir)}))
            self.client.set_terminated(run_id, "FINISHED")  # a container: its children carry the work

        return self._find_or_create(experiment, tags, place.study, describe)

    def _find_or_create(self, experiment: str, tags: Dict[str, str], name: str,
                        on_create: Callable[[str], None]) -> str:
        """The oldest run with these tags; created when none. Two workers racing to create keep the oldest."""
        def oldest() -> Optional[str]:
            query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
            runs = self.client.search_runs([experiment], query, order_by=["attributes.start_time ASC"], max_results=5)
            return min(runs, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id if runs else None

        found = oldest()
        if found is not None:
            return found
        created = self.client.create_run(experiment, run_name=name, tags=tags).info.run_id
        winner = oldest()
        if winner != created:
            self.client.delete_run(created)
            return winner
        on_create(created)
        return created

    @staticmethod
    def _tags(tags: Dict[str, str]) -> List[Any]:
        from mlflow.entities import RunTag

        return [RunTag(k, v) for k, v in tags.items()]

    def _log(self, run_id: Optional[str] = None, params: Optional[Dict[str, str]] = None,
             metrics: Optional[Dict[str, float]] = None, step: int = 0) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id or self.run_id,
            metrics=[Metric(k, v, now, step) for k, v in (metrics or {}).items()],
            params=[Param(k, v[:6000]) for k, v in (params or {}).items()],
        )

    def on_epoch_end(self, epoch: int, record: Dict[str, Any]) -> None:
        if self.run_id is not None:
            self.guard(f"log epoch {epoch}", lambda: self._log(metrics=numbers(record), step=epoch))

    def on_train_end(self, result: Dict[str, Any]) -> None:
        if self.run_id is None:
            return

        def log_result() -> None:
            self._log(metrics=final_metrics(result), step=int(result.get("epochs_run", 0)))
            tags = {"stop_reason": str(result.get("stop_reason"))} if result.get("stop_reason") else {}
            tags["objective_metric"] = str(result.get("objective_metric"))
            self.client.log_batch(self.run_id, tags=self._tags(tags))

        self.guard("log the run's results", log_result)

    def finish(self, files: Sequence[Path]) -> None:
        if self.run_id is None:
            return

        def close() -> None:
            for path in files:
                self.client.log_artifact(self.run_id, str(path))
            self.client.log_text(self.run_id, OmegaConf.to_yaml(self.cfg, resolve=True), "config.yaml")
            self.client.set_terminated(self.run_id, "FINISHED")
            if self.trial_run_id is not None:
                self._aggregate_repeats()

        self.guard("close the run", close)

    def _aggregate_repeats(self) -> None:
        """The trial's run: each final metric aggregated (the sweep's repeats.aggregate) over its finished repeats."""
        repeats = self.client.search_runs(
            [self.experiment_id],
            f"tags.`mlflow.parentRunId` = '{self.trial_run_id}' and attributes.status = 'FINISHED'")
        fn = AGGREGATES.get(self.place.aggregate, statistics.fmean)
        names = set.intersection(*(set(r.data.metrics) for r in repeats))
        figures = {k: float(fn([r.data.metrics[k] for r in repeats])) for k in sorted(names)}
        self._log(self.trial_run_id, metrics={**figures, "repeats_run": float(len(repeats))}, step=len(repeats))
        self.client.set_terminated(self.trial_run_id, "FINISHED")

    def fail(self, exc: BaseException) -> None:
        if self.run_id is None:
            return
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        self.guard("close the run", lambda: self.client.set_terminated(self.run_id, status))


class TensorBoardTracker(GuardedTracker):
    kind = "tensorboard"

    def __init__(self, cfg: DictConfig, place: SweepPlace):
        super().__init__()
        self.writer: Any = None
        root = Path(cfg.tracking.log_dir) if cfg.tracking.log_dir else None
        if place.in_sweep:
            folder = (root / place.study if root else place.sweep_dir / "tensorboard") / f"trial_{place.trial}"
            if place.repeat_key is not None:
                folder = folder / f"{place.repeat_key}_{OmegaConf.select(cfg, place.repeat_key)}"
        else:
            folder = root / place.run_dir.name if root else place.run_dir / "tensorboard"
        self.folder, self.cfg = folder, cfg

    def on_train_start(self) -> None:
        self.guard(f"write to {self.folder}", self._open)

    def _open(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.folder))
        self.writer.add_text("config", "```\n" + OmegaConf.to_yaml(self.cfg, resolve=True) + "\n```", 0)
        log.info("tracking: tensorboard events in %s", self.folder)

    def on_epoch_end(self, epoch: int, record: Dict[str, Any]) -> None:
        if self.writer is None:
            return

        def write() -> None:
            for key, value in numbers(record).items():
                self.writer.add_scalar(key, value, epoch)
            self.writer.flush()

        self.guard(f"write epoch {epoch}", write)

    def on_train_end(self, result: Dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = int(result.get("epochs_run", 0))
        self.guard("write the run's results", lambda: [
            self.writer.add_scalar(f"final/{k}", v, step) for k, v in final_metrics(result).items()])

    def finish(self, files: Sequence[Path]) -> None:
        if self.writer is not None:
            self.guard("close its event file", self.writer.close)

    def fail(self, exc: BaseException) -> None:
        self.finish(())


def open_tracker(cfg: DictConfig) -> Tracker:
    """The tracker ``cfg.tracking`` asks for (checked by ``check_tracking`` first)."""
    kind = cfg.tracking.kind
    if kind == "none":
        return Tracker()
    place = SweepPlace()
    return MLflowTracker(cfg, place) if kind == "mlflow" else TensorBoardTracker(cfg, place)
