"""Which storage and network errors are transient: worth running a step again after a wait.

A dropped connection, a timeout or an object store asking to slow down goes away by itself; a
missing file, a refused credential or a bad config does not, and running again would fail the
same way. Exceptions are classified along their whole chain (`raise ... from`), because our own
errors wrap the library's with the file they were about. botocore and aiohttp classes are
matched by name, so nothing here imports them.
"""

from __future__ import annotations

import errno

TRANSIENT_CLASS_NAMES = frozenset({
    # botocore
    "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
    "ResponseStreamingError", "IncompleteReadError",
    # aiohttp (s3fs' transport) and fsspec
    "ClientConnectorError", "ServerDisconnectedError", "ServerTimeoutError", "ClientPayloadError",
    "FSTimeoutError",
})
TRANSIENT_S3_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout",
                                "RequestTimeTooSkewed", "ThrottlingException", "503", "500"})
TRANSIENT_ERRNOS = frozenset({errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ETIMEDOUT,
                              errno.EPIPE, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EAGAIN})


def error_chain(error: BaseException):
    """`error`, then its causes and contexts, each once."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def is_transient(error: BaseException) -> bool:
    """True when `error` or anything in its chain is a connection, timeout or throttling error."""
    for e in error_chain(error):
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
        if isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS:
            return True
        if type(e).__name__ in TRANSIENT_CLASS_NAMES:
            return True
        response = getattr(e, "response", None)  # botocore's ClientError
        if isinstance(response, dict) and response.get("Error", {}).get("Code") in TRANSIENT_S3_CODES:
            return True
    return False
