"""Who may use the HTTP API. Reads (status, peers, artifacts, audit, events, queries, metrics, the page) are open to
clients on the loopback interface; a client from anywhere else, and every action that changes something (revoke,
block, quarantine, leave), must present the home's token as `Authorization: Bearer TOKEN`.

The token is a file in the home (`api.token`, mode 0600) that `ffnode api-token` prints, makes on first use and
replaces with `--rotate`; the node reads it again whenever the file changes, so a rotation needs no restart. A
reverse proxy on the same machine makes every client look local: put reads behind the proxy's own access control,
or have the node listen where only the proxy reaches it.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path

TOKEN_FILE = "api.token"


def token_path(home: Path) -> Path:
    return home / TOKEN_FILE


def ensure_token(home: Path, rotate: bool = False) -> str:
    """The home's API token, made (or, with `rotate`, replaced) as a 0600 file written in one rename."""
    path = token_path(home)
    if not rotate and path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.replace(tmp, path)
    return token


def is_loopback(host: str | None) -> bool:
    """Whether a client address is this machine's loopback (IPv4-mapped IPv6 included); unknown is not."""
    if not host:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


class Tokens:
    """The token file of a home, read again when it changes; None until one is made."""

    def __init__(self, home: Path) -> None:
        self.path = token_path(home)
        self._seen: tuple[int, int] | None = None
        self._token: bytes | None = None

    def current(self) -> bytes | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._seen, self._token = None, None
            return None
        if (st.st_mtime_ns, st.st_ino) != self._seen:
            self._token = self.path.read_text().strip().encode() or None
            self._seen = (st.st_mtime_ns, st.st_ino)
        return self._token

    def check(self, authorization: str | None) -> str | None:
        """None if `authorization` carries the token, else why not (the 401's message)."""
        token = self.current()
        if token is None:
            return "this request needs the API token, and the home has none yet: run `ffnode api-token` at the node"
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return "this request needs `Authorization: Bearer <token>` (the token: `ffnode api-token` at the node)"
        if not hmac.compare_digest(presented.strip().encode(), token):
            return "the bearer token is not this node's API token"
        return None
