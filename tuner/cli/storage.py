"""The command that serves a storage to workers on many machines: `storage-proxy`."""

from __future__ import annotations

from pathlib import Path

import click

from tuner.cli.group import cli
from tuner.cli.options import storage_option
from tuner.errors import TunerError
from tuner.storage import DEFAULT_PROXY_PORT


@cli.command("storage-proxy")
@storage_option
@click.option(
    "--host",
    default="localhost",
    show_default=True,
    help="Address to listen on; 0.0.0.0 for every network of this machine (a trusted one, "
    "unless TUNER_PROXY_TOKEN and --tls-cert are set: without them the proxy asks no token and "
    "its calls travel in the clear).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PROXY_PORT,
    show_default=True,
    help="Port to listen on (0: any free one, shown at start).",
)
@click.option(
    "--stats",
    type=click.FloatRange(min=0),
    default=0,
    metavar="SECONDS",
    help="Every SECONDS, print the calls served since the last such line: how many, the time "
    "spent in them, and the methods that took most of it (0: never).  [default: 0]",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The server's certificate chain (PEM): serve over TLS, for workers on grpcs://. "
    "Needs --tls-key.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The private key of --tls-cert (PEM).",
)
def storage_proxy(
    storage: str, host: str, port: int, stats: float, tls_cert: Path | None, tls_key: Path | None
) -> None:
    """Serve the storage to workers through Optuna's gRPC proxy, with tuner's locks and
    heartbeats: hundreds of workers (--storage grpc://HOST:PORT) share its few database
    connections. Runs until Ctrl-C or SIGTERM.

    The proxy also keeps each study's queue of trials filled within its budget, as claims run it
    short, so that its workers neither take the queue's lock nor count the study's trials.

    With TUNER_PROXY_TOKEN set, every client must give that token (grpc://:TOKEN@host:port, or
    its own TUNER_PROXY_TOKEN); with --tls-cert and --tls-key, clients reach it on grpcs://
    (trusting the system's certificates, or those in the PEM file TUNER_PROXY_CA).

    \b
    Example:
      tuner storage-proxy --storage postgresql://tuner@db-host/tuner --host 0.0.0.0 --port 13000
      tuner run studies/nyc-weather.toml --workers 8 --storage grpc://proxy-host:13000
    \b
    Off a trusted network, over TLS with a token:
      TUNER_PROXY_TOKEN=s3cret tuner storage-proxy --storage postgresql://tuner@db-host/tuner \\
          --host 0.0.0.0 --port 13000 --tls-cert proxy.pem --tls-key proxy.key
      tuner run studies/nyc-weather.toml --workers 8 --storage grpcs://:s3cret@proxy-host:13000
    """
    from tuner.search.queue import ProxyRefill
    from tuner.storage.proxy_server import serve

    if (tls_cert is None) != (tls_key is None):
        raise TunerError("--tls-cert and --tls-key go together: give both, or neither")

    serve(
        storage,
        ProxyRefill,
        host,
        port,
        say=lambda line: click.echo(line),
        stats_every=stats,
        tls=(tls_cert, tls_key) if tls_cert and tls_key else None,
    )
