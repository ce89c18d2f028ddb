"""Who may use the HTTP API. Reads (status, peers, artifacts, audit, events, queries, metrics) are open to clients
on the loopback interface that name the node by a loopback name (localhost, 127.0.0.1, [::1]) or one of
`api.allowed_hosts` in their Host header (a page whose name was made to resolve to 127.0.0.1, DNS rebinding, is
not); every other request, and every action that changes something (revoke, block, quarantine, leave), must present
the home's token as `Authorization: Bearer TOKEN`. The client's address is the socket's: forwarding headers
(X-Forwarded-For) are ignored.

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


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(header: str) -> str:
    """The name in a Host header, without its port or IPv6 brackets, lower case."""
    if header.startswith("["):
        return header[1 : header.find("]")].lower() if "]" in header else ""
    name, colon, port = header.rpartition(":")
    return (name if colon and port.isdigit() else header).lower()


def reads_open(client: str | None, host_header: str, allowed: frozenset[str]) -> bool:
    """Whether a read may go without the token: a loopback client naming the node by a loopback name or by one of
    `allowed` (api.allowed_hosts)."""
    return is_loopback(client) and host_name(host_header) in LOOPBACK_NAMES | allowed


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

    def check(self, authorization: str | None) -> tuple[int, str] | None:
        """None if `authorization` carries the token, else the refusal: 401 and why (none given, or the home has
        none yet), or 403 (a wrong one)."""
        token = self.current()
        if token is None:
            return 401, "this request needs the API token, and the home has none: run `ffnode api-token` at the node"
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return 401, "this request needs `Authorization: Bearer <token>` (the token: `ffnode api-token` at the node)"
        if not hmac.compare_digest(presented.strip().encode(), token):
            return 403, "the bearer token is not this node's API token"
        return None
