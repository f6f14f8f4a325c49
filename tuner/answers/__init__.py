"""The answers a finished search gives: the best trials beside the baselines (`results`),
diagnoses of the search (`diagnoses`), what each technique did among the searched trials
(`analysis`) and in an ablation (`ablation`), the words and statistics of a verdict
(`verdict`), the report and its figures (`report`, `figures`), and optuna-dashboard
(`dashboard`). Reads studies; never trains.

Layer 7 of tuner. May import: tuner.errors, tuner.config, tuner.patches, tuner.storage,
tuner.data, tuner.training, tuner.search.
"""
