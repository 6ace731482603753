"""Kafka request and response headers (hand-written; see RequestHeader.json / ResponseHeader.json).

Header versions: a request uses header v2 (v1 plus a tagged-field section) when its API version
is flexible and v1 otherwise; ControlledShutdown v0 alone uses v0 (no client id). Responses use
v1 (a tagged-field section after the correlation id) for flexible versions and v0 otherwise,
except that ApiVersions responses always use v0, so a client that does not yet know the broker's
versions can always parse them.

The client id is an old-style nullable string (int16 length) in every header version, even v2.
"""

from __future__ import annotations

from dataclasses import dataclass

from headwater.protocol._primitives import Reader, Writer
from headwater.protocol.messages import REQUEST_FIRST_FLEXIBLE_VERSION

__all__ = [
    "RequestHeader",
    "decode_request_header",
    "encode_request_header",
    "encode_response_header",
    "request_header_version",
    "response_header_version",
]

_API_VERSIONS = 18
_CONTROLLED_SHUTDOWN = 7


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


def _is_flexible(api_key: int, api_version: int) -> bool:
    first = REQUEST_FIRST_FLEXIBLE_VERSION.get(api_key)
    return first is not None and api_version >= first


def request_header_version(api_key: int, api_version: int) -> int:
    if api_key == _CONTROLLED_SHUTDOWN and api_version == 0:
        return 0
    return 2 if _is_flexible(api_key, api_version) else 1


def response_header_version(api_key: int, api_version: int) -> int:
    if api_key == _API_VERSIONS:
        return 0
    return 1 if _is_flexible(api_key, api_version) else 0


def decode_request_header(reader: Reader) -> RequestHeader:
    """Read a request header; the reader is left at the start of the request body.

    Raises `MalformedFrameError` on truncated or malformed input. An unknown API key or version
    still decodes (as header v1/v2 by the spec tables) so the caller can answer with an error.
    """
    api_key = reader.int16()
    api_version = reader.int16()
    correlation_id = reader.int32()
    version = request_header_version(api_key, api_version)
    client_id = reader.nullable_string() if version >= 1 else None
    if version >= 2:
        reader.skip_tagged_fields()
    return RequestHeader(api_key, api_version, correlation_id, client_id)


def encode_request_header(
    writer: Writer, api_key: int, api_version: int, correlation_id: int, client_id: str | None
) -> None:
    """Write a request header (the client side; used by tests and tools)."""
    writer.int16(api_key)
    writer.int16(api_version)
    writer.int32(correlation_id)
    version = request_header_version(api_key, api_version)
    if version >= 1:
        writer.nullable_string(client_id)
    if version >= 2:
        writer.empty_tagged_fields()


def encode_response_header(writer: Writer, correlation_id: int, header_version: int) -> None:
    writer.int32(correlation_id)
    if header_version >= 1:
        writer.empty_tagged_fields()
