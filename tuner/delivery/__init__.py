"""The delivered model: the winning trial trained again and scored on the test split
(`retrain`), saved as a `.keras` file that takes raw data (`export`), and its predictions on
new data (`predict`).

Layer 8 of tuner. May import: tuner.errors, tuner.config, tuner.patches, tuner.storage,
tuner.data, tuner.training, tuner.search, tuner.answers.
"""
