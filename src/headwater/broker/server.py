"""The asyncio server: accepts connections, moves bytes, and hands requests to the handlers.

Each connection has one `ServerConnection` (protocol state, no I/O) and one task that answers
its requests in order, as Kafka does. Reading pauses while a connection has its maximum of
requests awaiting answers and while the socket's write buffer is full, so memory per
connection stays bounded; the number of connections is bounded too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import cast

from headwater.broker.config import BrokerConfig
from headwater.broker.handlers import Handlers
from headwater.broker.zero_copy import send_chunks
from headwater.log.manager import LogManager
from headwater.protocol.connection import ProtocolViolation, Request, ServerConnection

_log = logging.getLogger(__name__)


class _ClientConnection(asyncio.Protocol):
    """One client socket; owned by the event loop thread."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._transport: asyncio.Transport | None = None
        self._protocol = ServerConnection(
            supported=broker.handlers.supported_versions,
            frame_bytes_max=broker.config.frame_bytes_max,
            in_flight_max=broker.config.in_flight_max,
        )
        self._queue: asyncio.Queue[Request | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._reading = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if len(self._broker.connections) >= self._broker.config.connections_max:
            _log.warning("refusing a connection: %d open", len(self._broker.connections))
            self._transport.close()
            return
        self._broker.connections.add(self)
        self._task = asyncio.get_running_loop().create_task(self._answer())

    def data_received(self, data: bytes) -> None:
        try:
            requests = self._protocol.receive(data)
        except ProtocolViolation as error:
            _log.info("closing a connection: %s", error)
            self.close()
            return
        for request in requests:
            self._queue.put_nowait(request)
        if self._protocol.violation is not None:
            _log.info(
                "closing a connection after its last good request: %s", self._protocol.violation
            )
            self._queue.put_nowait(None)  # answer what came before, then close
            if self._transport is not None:
                self._transport.pause_reading()
            self._reading = False
            return
        self._update_reading()

    def _update_reading(self) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        should_read = self._protocol.wants_more and self._writable.is_set()
        if should_read and not self._reading:
            self._transport.resume_reading()
        elif not should_read and self._reading:
            self._transport.pause_reading()
        self._reading = should_read

    def pause_writing(self) -> None:
        self._writable.clear()
        self._update_reading()

    def resume_writing(self) -> None:
        self._writable.set()
        self._update_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._broker.connections.discard(self)
        self._protocol.close()
        self._queue.put_nowait(None)

    def close(self) -> None:
        self._protocol.close()
        if self._transport is not None:
            self._transport.close()

    async def _answer(self) -> None:
        """Answer requests one at a time, in order."""
        while True:
            request = await self._queue.get()
            if request is None or self._transport is None or self._transport.is_closing():
                if request is None and self._protocol.violation is not None:
                    self.close()
                return
            try:
                reply = await self._broker.handlers.handle(request)
                if self._transport.is_closing():
                    return  # the client left while we worked (a long poll): nobody to answer
                if reply is None:
                    self._protocol.skip_response(request)
                else:
                    body, version = reply
                    frame = self._protocol.respond(request, body, version=version)
                    self._broker.zero_copy_bytes += send_chunks(self._transport, frame.chunks())
            except Exception:
                # A bug in a handler or an encoder must not take the broker down, nor leave the
                # client waiting forever: drop this client only.
                _log.exception("answering API %d failed; closing the connection", request.api_key)
                self.close()
                return
            self._update_reading()
            await self._writable.wait()


class Broker:
    """A running broker: the log manager, the handlers and the listening socket."""

    def __init__(self, config: BrokerConfig, manager: LogManager | None = None) -> None:
        self.config = config
        self.manager = manager or LogManager(config.data_dir, owner="headwater serve")
        self.handlers = Handlers(config, self.manager)
        self.connections: set[_ClientConnection] = set()
        self.zero_copy_bytes = 0  # record bytes sent straight from segment files by sendfile
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self.manager.start_background(
            retention_check_interval_ms=self.config.retention_check_interval_ms
        )
        await self.handlers.start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ClientConnection(self),
            self.config.listen_host,
            self.config.listen_port,
            reuse_address=True,
            backlog=512,
        )
        if self.config.listen_port == 0 and self.config.advertised_port is None:
            self.handlers.advertised_port = self.port
        _log.info("listening on %s:%d", self.config.listen_host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        await self.handlers.close()
        self.manager.close()


async def serve(config: BrokerConfig, *, ready: asyncio.Event | None = None) -> None:
    """Run a broker until SIGTERM or SIGINT, then shut down cleanly."""
    broker = Broker(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    await broker.start()
    print(
        f"headwater broker listening on {config.listen_host}:{broker.port} "
        f"(data in {config.data_dir})",
        flush=True,
    )
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await broker.stop()
        print(
            f"headwater broker stopped ({broker.zero_copy_bytes} record bytes sent by sendfile)",
            flush=True,
        )


__all__ = ["Broker", "serve"]
