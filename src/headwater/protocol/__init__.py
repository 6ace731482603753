"""The Kafka wire protocol.

`_primitives` holds the bounds-checked `Reader` and the `Writer`; `messages` is generated from
Apache Kafka's JSON specs by `tools/generate_protocol.py` (one module per API, a request and a
response class each, with `encode(writer, version)` / `decode(reader, version)`); `headers` has
the request/response header helpers.
"""

from headwater.protocol._primitives import (
    ApiMessage,
    MalformedFrameError,
    Reader,
    UnsupportedVersionError,
    Writer,
)

__all__ = ["ApiMessage", "MalformedFrameError", "Reader", "UnsupportedVersionError", "Writer"]
