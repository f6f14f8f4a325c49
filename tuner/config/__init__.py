"""The study file: its schema (`schema`) and the reading of a TOML file into it (`study_file`).

Layer 1 of tuner. May import: tuner.errors.
"""

from tuner.config.schema import (
    ACTIVATIONS,
    BACKENDS,
    CELLS,
    COST_OBJECTIVES,
    LOSSES,
    METRICS,
    OPTIMIZERS,
    TASK_METRICS,
    TASKS,
    AblationConfig,
    DataConfig,
    Param,
    PrunerConfig,
    SamplerConfig,
    SearchSpace,
    StudyConfig,
    TrainingConfig,
    WorkersConfig,
)
from tuner.config.study_file import load_study_config

__all__ = [
    "COST_OBJECTIVES",
    "METRICS",
    "CELLS",
    "ACTIVATIONS",
    "OPTIMIZERS",
    "BACKENDS",
    "TASKS",
    "LOSSES",
    "TASK_METRICS",
    "Param",
    "SearchSpace",
    "SamplerConfig",
    "PrunerConfig",
    "DataConfig",
    "TrainingConfig",
    "WorkersConfig",
    "AblationConfig",
    "StudyConfig",
    "load_study_config",
]
