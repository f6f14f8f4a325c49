"""The command that serves a storage to workers on many machines: `storage-proxy`."""

from __future__ import annotations

import click

from tuner.cli.group import cli
from tuner.cli.options import storage_option
from tuner.storage import DEFAULT_PROXY_PORT


@cli.command("storage-proxy")
@storage_option
@click.option(
    "--host",
    default="localhost",
    show_default=True,
    help="Address to listen on; 0.0.0.0 for every network of this machine (a trusted one: "
    "the proxy asks no password).",
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
def storage_proxy(storage: str, host: str, port: int, stats: float) -> None:
    """Serve the storage to workers through Optuna's gRPC proxy, with tuner's locks and
    heartbeats: hundreds of workers (--storage grpc://HOST:PORT) share its few database
    connections. Runs until Ctrl-C or SIGTERM.

    \b
    Example:
      tuner storage-proxy --storage postgresql://tuner@db-host/tuner --host 0.0.0.0 --port 13000
      tuner run studies/nyc-weather.toml --workers 8 --storage grpc://proxy-host:13000
    """
    from tuner.storage.proxy_server import serve

    serve(storage, host, port, say=lambda line: click.echo(line), stats_every=stats)
