"""The search: Optuna studies and the processes that run them.

The study file's definition stored on the study (`definition`); creating or resuming a study,
its sampler, pruner and seed configurations (`study`); the search space, the only module that
calls `trial.suggest_*` (`space`); the shared queue and budget (`queue`); reading trials
(`trials`); the objective that trains one trial (`objective`); the worker loop (`worker`), its
process handling (`process`), the launcher that starts and supervises workers (`launcher`) and
its progress display (`progress`); and the ablation's runs, a search of their own in a companion
study (`ablation`, `companion`).

Layer 6 of tuner. May import: tuner.errors, tuner.config, tuner.patches, tuner.storage,
tuner.data, tuner.training.
"""
