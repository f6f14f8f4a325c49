"""Seeds drawn from a study's `[sampler] seed`: numpy alone, so that modules which only plan
trials (the ablation) do not import Keras."""

from __future__ import annotations

import numpy as np


def training_seed(study_seed: int, number: int) -> int:
    """Trial `number`'s seed for its training, drawn from the study's `[sampler] seed`."""
    return int(np.random.SeedSequence([study_seed, number]).generate_state(1)[0] >> 1)
