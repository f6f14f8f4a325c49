"""Where a storage's artifacts (retrained models and their metrics) live: a folder used as
Optuna's `FileSystemArtifactStore`, `artifacts/` beside a SQLite storage file by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound
from sqlalchemy.engine import make_url

FOLDER = "artifacts"
# A study user attribute `retrained:N` links trial N to its retrained model's artifacts.
RETRAINED_PREFIX = "retrained:"


def default_dir(url: str) -> Path:
    """`artifacts/` beside a SQLite storage file, else in the current folder."""
    try:
        parsed = make_url(url)
    except Exception:
        return Path(FOLDER)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return Path(parsed.database).parent / FOLDER
    return Path(FOLDER)


def artifact_dir(url: str, given: Path | None) -> Path:
    return (given or default_dir(url)).absolute()


def open_store(directory: Path) -> FileSystemArtifactStore:
    """The artifact store in `directory`, made if missing."""
    directory.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(directory)


def remove_all(study: optuna.Study, storage: optuna.storages.BaseStorage, directory: Path) -> int:
    """Remove the files of every artifact recorded in `study` (on the study or on its trials)
    from the store in `directory`; returns how many were there."""
    if not directory.is_dir():
        return 0
    store = FileSystemArtifactStore(directory)
    ids = [meta.artifact_id for meta in optuna.artifacts.get_all_artifact_meta(study)]
    for trial in study.get_trials(deepcopy=False):
        ids += [
            meta.artifact_id
            for meta in optuna.artifacts.get_all_artifact_meta(trial, storage=storage)
        ]
    removed = 0
    for artifact_id in ids:
        try:
            store.remove(artifact_id)
        except ArtifactNotFound:
            continue
        removed += 1
    return removed


def retrained_models(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """The retrained models recorded in a study, by trial number (the latest for each)."""
    return {
        int(key.removeprefix(RETRAINED_PREFIX)): value
        for key, value in study.user_attrs.items()
        if key.startswith(RETRAINED_PREFIX) and key.removeprefix(RETRAINED_PREFIX).isdigit()
    }
