"""Where a storage's artifacts (retrained models and their metrics) live: an artifact store of
Optuna's, in a folder (`FileSystemArtifactStore`) or in an S3 bucket (`Boto3ArtifactStore`,
under a prefix). The location is `--artifacts DIR|s3://BUCKET/PREFIX`, else `$TUNER_ARTIFACTS`,
else `artifacts/` beside a SQLite storage file (the current folder for other storages).

A bucket is reached with boto3's own settings: credentials from the environment
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), `~/.aws` or the machine's role, and another
endpoint than AWS's (MinIO, a local S3) from `AWS_ENDPOINT_URL`. Workers on many machines share
a bucket where they would need a shared volume for a folder.

Optuna's store names each file by its artifact id, without an extension, which
`keras.saving.load_model` refuses; so each retrained model also gets a readable name,
`models/<study>-trial-<N>/<study>-trial-<N>.keras` (in a folder, a hard link to the artifact's
file, or a copy where links cannot be made; in a bucket, a copy of the object), with its JSON
beside it. A model in a bucket is downloaded to a temporary file to be loaded."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound
from sqlalchemy.engine import make_url

from tuner.errors import TunerError

FOLDER = "artifacts"
ENV_VAR = "TUNER_ARTIFACTS"
# The folder of the store where artifacts get readable names.
NAMED = "models"
# A study user attribute `retrained:N` links trial N to its retrained model's artifacts.
RETRAINED_PREFIX = "retrained:"
SCHEMES = ("s3",)


class ArtifactStoreError(TunerError):
    """The artifact store cannot be named, reached or used."""


@dataclass(frozen=True)
class Bucket:
    """An artifact store in an object store: `s3://bucket/prefix`."""

    scheme: str
    bucket: str
    prefix: str = ""

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")

    def key(self, name: str) -> str:
        """The object key of `name` (an artifact id, or a readable path) under the prefix."""
        return f"{self.prefix}/{name}" if self.prefix else name


Location = Path | Bucket


def parse_location(text: str) -> Location:
    """An artifact location as a user writes it: a folder, or `s3://bucket/prefix`."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return Path(text).expanduser().absolute()
    if scheme not in SCHEMES:
        raise ArtifactStoreError(
            f"artifact store {text!r}: unknown scheme {scheme}:// (use a folder or "
            "s3://bucket/prefix)"
        )
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ArtifactStoreError(f"artifact store {text!r} names no bucket (s3://bucket/prefix)")
    return Bucket(scheme, bucket, prefix.strip("/"))


def default_dir(url: str) -> Path:
    """`artifacts/` beside a SQLite storage file, else in the current folder."""
    try:
        parsed = make_url(url)
    except Exception:
        return Path(FOLDER)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return Path(parsed.database).parent / FOLDER
    return Path(FOLDER)


def artifact_dir(url: str, given: Location | None) -> Location:
    """The artifact store's location: `given` (--artifacts), else $TUNER_ARTIFACTS, else the
    default for the storage `url`."""
    return chosen_dir(given) or default_dir(url).absolute()


def chosen_dir(given: Location | None) -> Location | None:
    """The artifact location the user chose: `given` (--artifacts), else $TUNER_ARTIFACTS."""
    if given is None and os.environ.get(ENV_VAR):
        given = parse_location(os.environ[ENV_VAR])
    return given.absolute() if isinstance(given, Path) else given


def where(location: Location, relative: str) -> str:
    """The file or object at `relative` in the store at `location`, as a user reads it."""
    return str(location / relative) if isinstance(location, Path) else f"{location}/{relative}"


class _Prefixed:
    """An S3 artifact store whose objects lie under a prefix (Optuna's has none)."""

    def __init__(self, store: Any, bucket: Bucket) -> None:
        self.store, self.bucket = store, bucket

    def open_reader(self, artifact_id: str) -> IO[bytes]:
        reader: IO[bytes] = self.store.open_reader(self.bucket.key(artifact_id))
        return reader

    def write(self, artifact_id: str, content_body: IO[bytes]) -> None:
        self.store.write(self.bucket.key(artifact_id), content_body)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(self.bucket.key(artifact_id))


def _client(bucket: Bucket) -> Any:
    try:
        import boto3
    except ImportError:
        raise ArtifactStoreError(
            f"artifact store {bucket}: an S3 store needs boto3 (pip install 'tuner[s3]')"
        ) from None
    return boto3.client("s3")


def _reach(bucket: Bucket, call: Any) -> Any:
    """`call()` on the bucket, its errors as one line naming the store (never a secret)."""
    import botocore.exceptions

    try:
        return call()
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        raise _error(bucket, e) from None


def _error(bucket: Bucket, e: Exception) -> ArtifactStoreError:
    import botocore.exceptions

    if isinstance(e, botocore.exceptions.ClientError):
        error = e.response.get("Error", {})
        code = str(error.get("Code", "error"))
        words = {"404": "no such bucket or object", "403": "access denied (check the credentials)"}
        said = words.get(code) or f"{code}: {error.get('Message') or 'refused'}"
        return ArtifactStoreError(f"artifact store {bucket}: {said}")
    return ArtifactStoreError(f"artifact store {bucket}: {e}")


def open_store(location: Location) -> Any:
    """The artifact store at `location`: a folder, made by the first artifact written; a
    bucket, which must exist and be reachable with the credentials boto3 finds."""
    if isinstance(location, Path):
        # The folder is made by the first artifact written, so that a command that only reads
        # (the dashboard) leaves none behind.
        return _MadeOnWrite(location)
    from optuna.artifacts import Boto3ArtifactStore

    client = _client(location)
    _reach(location, lambda: client.head_bucket(Bucket=location.bucket))
    return _Prefixed(Boto3ArtifactStore(location.bucket, client=client), location)


def name_artifact(location: Location, artifact_id: str, folder: str, filename: str) -> str:
    """Give the artifact `artifact_id` of the store at `location` the readable path
    `models/<folder>/<filename>` (replacing what had that name); returns it, relative to the
    store."""
    relative = Path(NAMED, folder, filename)
    if isinstance(location, Bucket):
        client = _client(location)
        source = {"Bucket": location.bucket, "Key": location.key(artifact_id)}
        _reach(
            location,
            lambda: client.copy_object(
                Bucket=location.bucket, Key=location.key(relative.as_posix()), CopySource=source
            ),
        )
        return relative.as_posix()
    target = location / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=".naming-", dir=target.parent)) / filename
    try:
        try:
            os.link(location / artifact_id, temporary)
        except OSError:  # a file system without hard links
            shutil.copyfile(location / artifact_id, temporary)
        os.replace(temporary, target)
    finally:
        shutil.rmtree(temporary.parent, ignore_errors=True)
    return str(relative)


def exists(location: Location, relative: str) -> bool:
    """Whether the store at `location` holds `relative` (a readable path)."""
    if isinstance(location, Path):
        return (location / relative).is_file()
    import botocore.exceptions

    client = _client(location)
    try:
        client.head_object(Bucket=location.bucket, Key=location.key(relative))
    except botocore.exceptions.ClientError as e:
        if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return False
        raise _error(location, e) from None
    return True


class _MadeOnWrite(FileSystemArtifactStore):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.directory = directory

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        super().write(artifact_id, content_body)


def local_file(location: Location, relative: str, folder: Path) -> Path:
    """A local file holding `relative` of the store at `location`: the file itself in a folder,
    a download into `folder` (keeping its name) from a bucket."""
    if isinstance(location, Path):
        return location / relative
    client = _client(location)
    target = folder / Path(relative).name
    _reach(
        location,
        lambda: client.download_file(location.bucket, location.key(relative), str(target)),
    )
    return target


def remove_all(
    study: optuna.Study, storage: optuna.storages.BaseStorage, location: Location
) -> int:
    """Remove the files of every artifact recorded in `study` (on the study or on its trials)
    from the store at `location`; returns how many were there."""
    if isinstance(location, Path) and not location.is_dir():
        return 0
    ids = [meta.artifact_id for meta in optuna.artifacts.get_all_artifact_meta(study)]
    for trial in study.get_trials(deepcopy=False):
        ids += [
            meta.artifact_id
            for meta in optuna.artifacts.get_all_artifact_meta(trial, storage=storage)
        ]
    if isinstance(location, Bucket):
        return _remove_from_bucket(study, location, ids)
    store = FileSystemArtifactStore(location)
    for record in retrained_models(study).values():
        named = location / str(record.get("model_path", ""))
        if record.get("model_path") and named.parent.parent == location / NAMED:
            shutil.rmtree(named.parent, ignore_errors=True)
    removed = 0
    for artifact_id in ids:
        try:
            store.remove(artifact_id)
        except ArtifactNotFound:
            continue
        removed += 1
    return removed


def _remove_from_bucket(study: optuna.Study, bucket: Bucket, ids: list[str]) -> int:
    client = _client(bucket)
    named = [
        str(record[key])
        for record in retrained_models(study).values()
        for key in ("model_path", "metrics_path")
        if str(record.get(key, "")).startswith(f"{NAMED}/")
    ]
    removed = 0
    for name in [*ids, *named]:
        if exists(bucket, name):
            _reach(
                bucket,
                lambda n=name: client.delete_object(Bucket=bucket.bucket, Key=bucket.key(n)),
            )
            removed += name in ids
    return removed


def retrained_models(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """The retrained models recorded in a study, by trial number (the latest for each)."""
    return {
        int(key.removeprefix(RETRAINED_PREFIX)): value
        for key, value in study.user_attrs.items()
        if key.startswith(RETRAINED_PREFIX) and key.removeprefix(RETRAINED_PREFIX).isdigit()
    }
