"""Typed schemas of the training config.

The YAML files under ``conf/`` hold the values and the reason for each; these dataclasses hold
the shape and types (a value the YAML files always give is MISSING here, so it is stated once). Hydra merges
every YAML file into ``TrainConfig`` (the primary config lists ``train_schema`` first), so a
misspelled key or a value of the wrong type fails when the config is composed, before any work.
Value ranges (positive epochs, known placement names, ...) are checked where the value is used,
with a one-line :class:`~mnist_arch.errors.ConfigError`.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


@dataclass
class AugmentConfig:
    enabled: bool = MISSING
    rotation: float = MISSING  # degrees either way
    translate: float = MISSING  # fraction of the image side
    scale: float = MISSING  # fraction
    brightness: float = MISSING  # added to pixel values in [0, 1], up to this either way
    contrast: float = MISSING  # pixel values scaled by 1 +- up to this
    shear: float = 0.0  # degrees either way, along x (torchvision's RandomAffine(shear=...)); 0: none

@dataclass
class DataConfig:
    root: Optional[str] = MISSING
    val_size: int = MISSING
    train_subset: Optional[int] = MISSING
    test_subset: Optional[int] = MISSING
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class WidthsConfig:
    blocks: List[List[int]] = MISSING  # one list of conv output widths per block
    multiplier: float = 1.0  # every width is scaled by this and rounded (at least 1)


@dataclass
class NormConfig:
    placement: str = MISSING  # bn_relu | relu_bn | none


@dataclass
class DropoutConfig:
    placement: str = MISSING  # conv | block | none
    rate: float = 0.0
    kind: str = "element"  # element (nn.Dropout) | channel (nn.Dropout2d: whole feature maps)


@dataclass
class PoolConfig:
    after: List[int] = MISSING  # 1-based block numbers followed by a 2x2 max-pool
    transition: Optional[float] = None  # 1x1 conv after each pool keeping this share of channels


@dataclass
class HeadConfig:
    kind: str = MISSING  # gap_conv | gap_linear | conv_gap


@dataclass
class ConvConfig:
    kind: str = "full"  # full | separable (depthwise k x k, then 1x1: every conv but the first)


@dataclass
class ModelConfig:
    widths: WidthsConfig = field(default_factory=WidthsConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    conv: ConvConfig = field(default_factory=ConvConfig)
    kernel_size: int = 3
    padding: int = 0
    in_channels: int = 1
    num_classes: int = 10
    image_size: int = 28


@dataclass
class OptimConfig:
    name: str = MISSING  # sgd | adam | adamw
    lr: float = MISSING  # peak learning rate when a schedule warms up
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw only


@dataclass
class ScheduleConfig:
    name: str = MISSING  # onecycle | step | cosine | none
    pct_start: float = 0.2  # onecycle
    div_factor: float = 10.0  # onecycle: start lr = lr / div_factor
    final_div_factor: float = 100.0  # onecycle: end lr = start lr / final_div_factor
    step_size: int = 6  # step: epochs between decays
    gamma: float = 0.1  # step
    eta_min: float = 0.0  # cosine
    anneal_epochs: int = 0  # any schedule: its rate ramped linearly to zero over this many last epochs; 0: off


@dataclass
class TrainerConfig:
    epochs: int = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    device: str = MISSING  # auto | cpu | cuda | cuda:N
    threads: Optional[int] = MISSING
    channels_last: bool = MISSING
    ema: Optional[float] = MISSING  # decay of the weight average evaluated each epoch; null or 0: off
    ema_warmup: bool = MISSING  # the average's decay ramps up as min(ema, (1 + n) / (10 + n)) after n updates
    bn_recompute: int = MISSING  # batches of clean training images to recompute BatchNorm statistics from; 0: off
    label_smoothing: float = MISSING  # share of the training target spread over all classes; 0: plain targets
    progress: bool = MISSING
    callbacks: Dict[str, Any] = MISSING  # name -> node with _target_


@dataclass
class BudgetConfig:
    max_params: Optional[int] = MISSING  # None turns the guard off


@dataclass
class ObjectiveConfig:
    metric: str = MISSING  # one of mnist_arch.trainer.OBJECTIVES
    last_k: int = MISSING
    target_acc: float = MISSING  # percent


@dataclass
class TrackingConfig:
    kind: str = MISSING  # none | mlflow | tensorboard (mnist_arch.tracking)
    # each kind's YAML file gives the keys it uses; the others stay None
    uri: Optional[str] = None  # mlflow: tracking URI
    experiment: Optional[str] = None  # mlflow: experiment name
    request_timeout_s: Optional[int] = None  # mlflow: per HTTP request to a tracking server
    request_retries: Optional[int] = None  # mlflow: HTTP retries before the tracker gives up
    log_dir: Optional[str] = None  # tensorboard: root of the event folders; None: the sweep's or run's folder


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = MISSING


def register_configs() -> None:
    """Register the schema under the name the primary config's defaults list uses."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


register_configs()

# ${pid:} in conf/train.yaml's run and sweep folders: two runs started in the same second (two
# seeds side by side) get their own folders.
OmegaConf.register_new_resolver("pid", os.getpid, replace=True)


CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
PRIMARY_CONFIG = "train"


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose the training config from ``conf/`` with Hydra overrides, as ``mnist-train`` would.

    Works inside and outside a running Hydra app (tests, the summary command, the sweeper's
    budget check).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a running Hydra app: use its search path
        return compose(PRIMARY_CONFIG, overrides=list(overrides))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(PRIMARY_CONFIG, overrides=list(overrides))
