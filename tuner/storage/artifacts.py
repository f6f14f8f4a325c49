"""Where a storage's artifacts (retrained models and their metrics) live: a folder used as
Optuna's `FileSystemArtifactStore`: `--artifacts DIR`, else `$TUNER_ARTIFACTS`, else
`artifacts/` beside a SQLite storage file (the current folder for other storages).

Optuna's store names each file by its artifact id, without an extension, which
`keras.saving.load_model` refuses; so each retrained model also gets a readable name,
`models/<study>-trial-<N>/<study>-trial-<N>.keras` (a hard link to the artifact's file, or a
copy where links cannot be made), with its JSON beside it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound
from sqlalchemy.engine import make_url

FOLDER = "artifacts"
ENV_VAR = "TUNER_ARTIFACTS"
# The folder of the store where artifacts get readable names.
NAMED = "models"
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
    """The artifact store's folder: `given` (--artifacts), else $TUNER_ARTIFACTS, else the
    default for the storage `url`."""
    return (chosen_dir(given) or default_dir(url)).absolute()


def chosen_dir(given: Path | None) -> Path | None:
    """The artifact folder the user chose: `given` (--artifacts), else $TUNER_ARTIFACTS."""
    if given is None and os.environ.get(ENV_VAR):
        given = Path(os.environ[ENV_VAR]).expanduser()
    return given.absolute() if given is not None else None


def name_artifact(directory: Path, artifact_id: str, folder: str, filename: str) -> str:
    """Give the artifact `artifact_id` of the store in `directory` the readable path
    `models/<folder>/<filename>` (replacing what had that name); returns it, relative to
    `directory`."""
    relative = Path(NAMED, folder, filename)
    target = directory / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=".naming-", dir=target.parent)) / filename
    try:
        try:
            os.link(directory / artifact_id, temporary)
        except OSError:  # a file system without hard links
            shutil.copyfile(directory / artifact_id, temporary)
        os.replace(temporary, target)
    finally:
        shutil.rmtree(temporary.parent, ignore_errors=True)
    return str(relative)


def open_store(directory: Path) -> FileSystemArtifactStore:
    """The artifact store in `directory`; the folder is made by the first artifact written, so
    that a command that only reads (the dashboard) leaves none behind."""
    return _MadeOnWrite(directory)


class _MadeOnWrite(FileSystemArtifactStore):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.directory = directory

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        super().write(artifact_id, content_body)


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
    for record in retrained_models(study).values():
        named = directory / str(record.get("model_path", ""))
        if record.get("model_path") and named.parent.parent == directory / NAMED:
            shutil.rmtree(named.parent, ignore_errors=True)
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
