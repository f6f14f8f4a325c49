"""Training: the Keras side. One model of the search space (`spec`), built and compiled
(`model`, with the custom layers of `layers`), on the Keras backend a worker chose (`backend`),
from a trial's training seed (`seeds`). Knows nothing of Optuna.

Layer 5 of tuner. May import: tuner.errors, tuner.config, tuner.patches, tuner.storage,
tuner.data.
"""
