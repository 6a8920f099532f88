"""Credentials out of anything shown: metadata, logs, links, files written.

Secrets reach the code through `dg.EnvVar` and the AWS chain; what is shown of a URI or DSN
that carries one (a tracking URI `https://user:password@host`, a libpq `password=...`) goes
through `redact` first.
"""

from __future__ import annotations

import re

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
_DSN_PASSWORD = re.compile(r"(?i)\b(password|passwd|pwd)\s*=\s*('[^']*'|\S+)")
MASK = "***"


def redact(text: str) -> str:
    """`text` with URL credentials (user and password) and DSN passwords masked."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    return _DSN_PASSWORD.sub(lambda m: f"{m.group(1)}={MASK}", text)


def has_credentials(text: str) -> bool:
    return redact(text) != text


def without_credentials(url: str) -> str:
    """A URL with its user and password removed: a link a browser can open (it asks the user)."""
    return _URL_CREDENTIALS.sub(lambda m: m.group("scheme"), url)
