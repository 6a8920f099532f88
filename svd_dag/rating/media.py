"""Video and image bytes for the page, local or s3://, with HTTP Range support.

Chromium asks for an mp4 by byte ranges ("bytes=0-", then the tail where the project's mp4s
keep their moov atom, then what it plays); a server that ignores Range makes it download
the whole file before it can start and stops seeking. One range per request is served
(what media elements ask for); a request without Range gets the whole file (200).

The URIs come from the task list only (see `tasks.media_id`); sizes are cached, the files
being immutable samples.
"""

from __future__ import annotations

import re
import threading
from typing import Iterator

from starlette.responses import Response, StreamingResponse

from svd_dag.storage import Store

CHUNK = 1 << 20
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(ValueError):
    """A Range header no part of the file answers (416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte, inclusive, of a single-range header; None: send the whole file
    (no header, several ranges, or a form not understood: RFC 9110 lets a server ignore Range)."""
    if not header:
        return None
    m = RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):  # "bytes=-N": the last N bytes
        n = int(m.group(2))
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - n), size - 1
    first = int(m.group(1))
    last = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    if first >= size or last < first:
        raise RangeNotSatisfiable(header)
    return first, last


class MediaFiles:
    """Opens task-list files by URI: absolute local paths and s3:// (with `Store`'s options)."""

    def __init__(self):
        self._stores: dict[str, Store] = {}
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()

    def _store(self, uri: str) -> Store:
        root = "/" if uri.startswith("/") else "s3://" + uri.removeprefix("s3://").split("/", 1)[0]
        with self._lock:
            if root not in self._stores:
                self._stores[root] = Store(root)
            return self._stores[root]

    def size(self, uri: str) -> int:
        """The file's size in bytes; FileNotFoundError if it is gone."""
        if uri not in self._sizes:
            self._sizes[uri] = self._store(uri).size(uri)
        return self._sizes[uri]

    def chunks(self, uri: str, first: int, last: int) -> Iterator[bytes]:
        """Bytes first..last (inclusive) of the file, CHUNK at a time (ranged reads on S3)."""
        fs = self._store(uri).fs
        position = first
        while position <= last:
            end = min(last + 1, position + CHUNK)
            block = fs.cat_file(uri, start=position, end=end)
            if not block:
                return
            yield block
            position += len(block)


def media_response(files: MediaFiles, uri: str, content_type: str, range_header: str | None,
                   head: bool = False) -> Response:
    """The file at `uri` as a 200 (whole) or 206 (one range) response; 416 for a range past
    its end. Raises FileNotFoundError when the file is missing."""
    size = files.size(uri)
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600", "Content-Type": content_type}
    try:
        wanted = parse_range(range_header, size)
    except RangeNotSatisfiable:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    first, last = wanted if wanted else (0, size - 1)
    status = 206 if wanted else 200
    headers["Content-Length"] = str(max(0, last - first + 1))
    if wanted:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    if head or size == 0:
        return Response(status_code=status, headers=headers)
    return StreamingResponse(files.chunks(uri, first, last), status_code=status, headers=headers,
                             media_type=content_type)
