"""A Kafka connection's protocol state, apart from any I/O (in the manner of h11).

The server feeds it bytes as they arrive and gets back `Request` events; it hands it response
bodies and gets back buffers to send. It owns framing (a 4-byte big-endian size before each
frame), the request header, the bound on frame size and on requests awaiting a response, and
the response order (Kafka answers a connection's requests in the order they came).

States: OPEN (reading frames) -> CLOSED (a protocol violation or the peer went away); once
CLOSED, every call raises. Not thread-safe: one connection, one task.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any

from headwater.protocol import headers
from headwater.protocol._primitives import MalformedFrameError, Reader, Writer

# Kafka's socket.request.max.bytes default: the largest frame a client may send (100 MiB).
FRAME_BYTES_MAX_DEFAULT = 100 * 1024 * 1024
# Requests read but not yet answered; past this the server stops reading (back-pressure).
IN_FLIGHT_REQUESTS_MAX_DEFAULT = 32
_SIZE_BYTES = 4
_API_VERSIONS_KEY = 18


class State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Request:
    """One decoded request.

    `body` is None when the API or version is not supported: `error` then says why. An
    unsupported ApiVersions request is still answered (with v0 and UNSUPPORTED_VERSION), as
    Kafka does, so a newer client can fall back; anything else unsupported closes the connection.
    """

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: Any
    error: str | None = None
    size_bytes: int = 0


class ProtocolViolation(Exception):
    """The peer broke the protocol; the connection must be closed."""


class ServerConnection:
    """Per-connection protocol state; see the module docstring."""

    def __init__(
        self,
        *,
        supported: dict[int, tuple[int, int]],
        frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT,
        in_flight_max: int = IN_FLIGHT_REQUESTS_MAX_DEFAULT,
    ) -> None:
        self.state = State.OPEN
        self._supported = supported
        self._frame_bytes_max = frame_bytes_max
        self._in_flight_max = in_flight_max
        self._buffer = bytearray()
        self._awaiting: deque[Request] = deque()
        # Set when a bad frame followed good ones in one `receive`: close after answering them.
        self.violation: ProtocolViolation | None = None

    @property
    def in_flight(self) -> int:
        return len(self._awaiting)

    @property
    def wants_more(self) -> bool:
        """False while the in-flight bound is reached: stop reading from the socket."""
        return self.state is State.OPEN and len(self._awaiting) < self._in_flight_max

    def receive(self, data: bytes | bytearray | memoryview) -> list[Request]:
        """Feed bytes from the socket; return every request they complete."""
        if self.state is not State.OPEN:
            raise ProtocolViolation("connection is closed")
        self._buffer += data
        requests: list[Request] = []
        view = memoryview(self._buffer)
        position = 0
        try:
            while len(view) - position >= _SIZE_BYTES:
                size = int.from_bytes(view[position : position + _SIZE_BYTES], "big", signed=True)
                if size < 0 or size > self._frame_bytes_max:
                    self.state = State.CLOSED
                    raise ProtocolViolation(
                        f"frame of {size} bytes is outside [0, {self._frame_bytes_max}]"
                    )
                end = position + _SIZE_BYTES + size
                if len(view) < end:
                    break
                frame = bytes(view[position + _SIZE_BYTES : end])
                position = end
                request = self._decode(frame)
                self._awaiting.append(request)
                requests.append(request)
        except ProtocolViolation as error:
            if not requests:
                raise
            # Answer what came before the bad frame, as Kafka does, then close: the caller
            # sees `violation` set and closes once these are answered.
            self.violation = error
        finally:
            view.release()
            del self._buffer[:position]
        return requests

    def _decode(self, frame: bytes) -> Request:
        reader = Reader(frame)
        try:
            header = headers.decode_request_header(reader)
        except MalformedFrameError as error:
            self.state = State.CLOSED
            raise ProtocolViolation(f"malformed request header: {error}") from None
        api_key, version = header.api_key, header.api_version
        supported = self._supported.get(api_key)
        if supported is None or not supported[0] <= version <= supported[1]:
            if api_key != _API_VERSIONS_KEY and supported is None:
                self.state = State.CLOSED
                raise ProtocolViolation(f"unsupported API key {api_key}")
            if api_key != _API_VERSIONS_KEY:
                self.state = State.CLOSED
                raise ProtocolViolation(f"unsupported version {version} of API {api_key}")
            return Request(
                api_key,
                version,
                header.correlation_id,
                header.client_id,
                None,
                f"ApiVersions v{version} is not supported",
                len(frame),
            )
        from headwater.protocol.messages import REQUEST_TYPES

        try:
            body = REQUEST_TYPES[api_key].decode(reader, version)
        except MalformedFrameError as error:
            self.state = State.CLOSED
            raise ProtocolViolation(
                f"malformed body of API {api_key} v{version}: {error}"
            ) from None
        return Request(
            api_key, version, header.correlation_id, header.client_id, body, None, len(frame)
        )

    def respond(self, request: Request, body: Any, *, version: int | None = None) -> Writer:
        """Encode the response to `request` (the oldest one awaiting a reply) as one frame.

        Returns a `Writer` whose `chunks()` are the frame, size prefix included; large record
        sets stay as references (no copy).
        """
        if not self._awaiting or self._awaiting[0] is not request:
            raise ProtocolViolation("responses must follow the order of requests")
        self._awaiting.popleft()
        api_version = request.api_version if version is None else version
        payload = Writer()
        headers.encode_response_header(
            payload,
            request.correlation_id,
            headers.response_header_version(request.api_key, api_version),
        )
        body.encode(payload, api_version)
        frame = Writer()
        frame.raw(payload.size.to_bytes(_SIZE_BYTES, "big"))
        frame.extend(payload)
        return frame

    def skip_response(self, request: Request) -> None:
        """Forget `request` without answering it (a Produce with acks=0)."""
        if not self._awaiting or self._awaiting[0] is not request:
            raise ProtocolViolation("responses must follow the order of requests")
        self._awaiting.popleft()

    def close(self) -> None:
        self.state = State.CLOSED


__all__ = [
    "FRAME_BYTES_MAX_DEFAULT",
    "IN_FLIGHT_REQUESTS_MAX_DEFAULT",
    "ProtocolViolation",
    "Request",
    "ServerConnection",
    "State",
]
