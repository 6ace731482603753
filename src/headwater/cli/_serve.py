"""`headwater serve`: run the Kafka-protocol broker over a data directory."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Annotated

import typer

from headwater.cli._common import (
    DataDirOption,
    parse_key_values,
    reporting_errors,
    resolve_data_dir,
)


def serve_command(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    listen: Annotated[
        str, typer.Option("--listen", help="HOST:PORT to listen on.", show_default=True)
    ] = "127.0.0.1:9092",
    advertise: Annotated[
        str | None,
        typer.Option("--advertise", help="HOST:PORT clients are told to connect to."),
    ] = None,
    partitions: Annotated[
        int, typer.Option("--default-partitions", help="Partitions of auto-created topics.")
    ] = 1,
    auto_create: Annotated[
        bool, typer.Option("--auto-create/--no-auto-create", help="Create topics on first use.")
    ] = True,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "-c",
            "--config",
            metavar="KEY=VALUE",
            help="A broker setting by Kafka's name (group.*, offsets.*, log.retention.check.interval.ms).",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Log more.")] = False,
) -> None:
    """Serve the Kafka protocol: any Kafka client or tool can produce and consume."""
    from headwater.broker import BrokerConfig, serve
    from headwater.broker.config import parse_address

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with reporting_errors():
        directory = resolve_data_dir(ctx, data_dir)
        os.makedirs(directory, exist_ok=True)
        host, port = parse_address(listen)
        advertised_host, advertised_port = parse_address(advertise) if advertise else (None, None)
        config = BrokerConfig(
            data_dir=directory,
            listen_host=host,
            listen_port=port,
            advertised_host=advertised_host,
            advertised_port=advertised_port,
            default_partitions=partitions,
            auto_create_topics=auto_create,
        ).with_settings(parse_key_values(settings, "broker setting"))
        try:
            import uvloop

            uvloop.run(serve(config))
        except ImportError:
            asyncio.run(serve(config))


__all__ = ["serve_command"]
