"""Options that several commands share, defined once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from tuner.config import StudyConfig, load_study_config
from tuner.errors import TunerError
from tuner.storage import (
    ENV_VAR,
    hide_password_in_logs,
    resolve_url,
)

# Neither `dir_okay=False` nor `readable`: the loader says what is wrong in one line, not usage.
study_file = click.argument(
    "study_file", type=click.Path(readable=False, path_type=Path), metavar="STUDY_FILE"
)


def storage_option(f: Any) -> Any:
    return click.option(
        "--storage",
        "storage",
        envvar=ENV_VAR,
        show_envvar=True,
        metavar="URL",
        help="Storage URL: any SQLAlchemy URL Optuna accepts, or grpc://HOST:PORT for a "
        "`tuner storage-proxy`. [default: sqlite:///tuner.db]",
        callback=_remember_storage,
        expose_value=True,
    )(f)


F = TypeVar("F", bound=Callable[..., Any])


def format_option(*choices: str) -> Callable[[F], F]:
    """`--format`, the first choice by default."""
    option: Callable[[F], F] = click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=choices[0],
        show_default=True,
        help="Output format.",
    )
    return option


def _remember_storage(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    if value is not None and not value.strip():
        raise TunerError(
            "--storage: the storage URL is empty; give one (such as sqlite:///tuner.db), or "
            "leave --storage out for the default"
        )
    url = resolve_url(value)
    ctx.meta["storage_url"] = url
    hide_password_in_logs(url)
    return url


def load(path: Path, models: bool = False) -> StudyConfig:
    """The study file's configuration, with Keras set to its backend; `models` for commands
    that save or load models taking raw data (text models need TensorFlow)."""
    from tuner.training.backend import for_models, use

    config = load_study_config(path)
    # Keras reads its backend once, on import: set it before any command imports Keras.
    backend = config.training.backend
    use(for_models(backend, config.data.task) if models else backend)
    return config


def parse_artifacts(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    from tuner.storage.artifacts import parse_location

    return parse_location(value) if value else None


def artifacts_option(f: Any) -> Any:
    return click.option(
        "--artifacts",
        envvar="TUNER_ARTIFACTS",
        show_envvar=True,
        metavar="DIR|s3://BUCKET/PREFIX",
        callback=parse_artifacts,
        help="The artifact store (retrained models): a folder, or an S3 bucket and prefix "
        "(boto3's credentials; AWS_ENDPOINT_URL for another S3 service).  [default: artifacts/ "
        "beside a SQLite storage file, else in the current folder]",
    )(f)


# Worker processes on this machine, for `tuner run` and `tuner ablate`.
workers_option = click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes to run on this machine.",
)
pin_option = click.option(
    "--pin/--no-pin", default=True, show_default=True, help="Give each worker its own CPU cores."
)
