"""`connect(url)`: the one place a backend is chosen.

    connect("file:///var/lib/app/data")   # embedded: the log engine in this process
    connect("./data")                     # the same, a plain path
    connect("kafka://127.0.0.1:9092")     # any Kafka-protocol cluster, through librdkafka
    connect("kafka://a:9092,b:9092")      # several bootstrap brokers

Settings given here apply to every producer, consumer and admin client the connection makes,
each taking the keys of its role; a key no role knows is refused here.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlsplit

from headwater.client._api import Client
from headwater.client._config import KEYS, PASSTHROUGH_PREFIX, normalize_key
from headwater.errors import ConfigError

SCHEMES = ("file", "kafka")


def _check_settings(settings: dict[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for raw, value in settings.items():
        key = normalize_key(raw)
        if key not in KEYS and not key.startswith(PASSTHROUGH_PREFIX):
            raise ConfigError(f"unknown config {key!r}")
        checked[key] = value
    return checked


def parse_url(url: str) -> tuple[str, str]:
    """(scheme, where): "file" and a directory path, or "kafka" and bootstrap servers."""
    text = os.fspath(url)
    if "://" not in text:
        if not text:
            raise ConfigError("connect() needs a URL: file:///path, a path, or kafka://host:port")
        return "file", text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"file URL {text!r} names a host; use file:///absolute/path")
        path = unquote(parts.path)
        if not path:
            raise ConfigError(f"file URL {text!r} has no path")
        return "file", path
    if scheme == "kafka":
        servers = parts.netloc
        if not servers or parts.path not in ("", "/"):
            raise ConfigError(f"kafka URL {text!r} must be kafka://host:port[,host:port]")
        for server in servers.split(","):
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"kafka URL {text!r}: {server!r} is not host:port")
        return "kafka", servers
    raise ConfigError(f"unknown URL scheme {parts.scheme!r} in {text!r}; use file:// or kafka://")


def connect(url: str | os.PathLike[str], **settings: Any) -> Client:
    """A client for `url`: `file://` (or a path) embeds the log, `kafka://` talks to brokers."""
    scheme, where = parse_url(os.fspath(url))
    checked = _check_settings(settings)
    if scheme == "file":
        from headwater.client._embedded import EmbeddedClient

        return EmbeddedClient(where, checked)
    from headwater.client._kafka import KafkaClient

    return KafkaClient(where, checked)


__all__ = ["SCHEMES", "connect", "parse_url"]
