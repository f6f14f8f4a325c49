"""The study storage: URLs and their passwords (`urls`), opening Optuna's RDB storage on one
(`engine`) and closing it (`closing`), locks shared by every process (`locks`), riding out a
lost connection (`reconnect`), database errors (`errors`), the retry of a failed trial
(`retry`), the storage served over gRPC to many machines (`proxy_server`, `tuner
storage-proxy`) and reached at `grpc://host:port` (`proxy_client`), and, fenced in one module,
everything that leans on Optuna's internals (`optuna_internals`).

The modules import one way: urls, errors → reconnect → optuna_internals → locks → retry →
proxy_client → engine → closing, proxy_server. Everything other modules use is importable from
`tuner.storage` itself, but `proxy_server`, which only `tuner storage-proxy` needs.

Layer 3 of tuner. May import: tuner.errors, tuner.config, tuner.patches.
"""

from __future__ import annotations

from tuner.storage.closing import close, opened
from tuner.storage.engine import (
    INIT_ATTEMPTS,
    LIBPQ_OPTIONS,
    SQLITE_BUSY_TIMEOUT_S,
    open_storage,
    study_names,
)
from tuner.storage.errors import is_transient, reason
from tuner.storage.locks import Busy, HoldsLocks, exclusive, locked, locked_if_free
from tuner.storage.optuna_internals import (
    CREATE_TOKEN,
    ReconnectingStorage,
    backend_of,
    claimed_trial,
    is_retry,
    live_trial,
    retrying,
    study_storage,
    trial_id,
)
from tuner.storage.proxy_client import ProxyStorage, Refilled
from tuner.storage.reconnect import in_storage_call
from tuner.storage.retry import (
    INTERRUPTED_RUNS,
    RETRY_OF,
    RetryOnce,
    queue_again,
    queue_lock,
    retry_of,
)
from tuner.storage.urls import (
    DEFAULT_PROXY_PORT,
    DEFAULT_URL,
    ENV_VAR,
    hide_password_in_logs,
    is_grpc,
    mask,
    resolve_url,
    scrub,
)

__all__ = [
    "Busy",
    "HoldsLocks",
    "CREATE_TOKEN",
    "DEFAULT_PROXY_PORT",
    "DEFAULT_URL",
    "ENV_VAR",
    "INIT_ATTEMPTS",
    "INTERRUPTED_RUNS",
    "LIBPQ_OPTIONS",
    "RETRY_OF",
    "SQLITE_BUSY_TIMEOUT_S",
    "ProxyStorage",
    "ReconnectingStorage",
    "Refilled",
    "RetryOnce",
    "backend_of",
    "claimed_trial",
    "close",
    "opened",
    "is_retry",
    "live_trial",
    "study_storage",
    "trial_id",
    "exclusive",
    "locked",
    "locked_if_free",
    "hide_password_in_logs",
    "in_storage_call",
    "is_grpc",
    "is_transient",
    "mask",
    "open_storage",
    "queue_again",
    "queue_lock",
    "reason",
    "resolve_url",
    "retry_of",
    "retrying",
    "scrub",
    "study_names",
]
