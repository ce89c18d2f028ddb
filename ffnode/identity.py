"""A node's Ed25519 identity: one 32-byte seed gives both the libp2p peer ID and the artifact signing key.

Keeping a single key means a manifest's `owner` is the libp2p peer ID of the site that signed it, so an
operator can match artifacts to peers; the peer ID stays fixed across restarts because the seed is
reloaded from the home. (Receivers do not require the gossip sender to be the owner: anyone may relay.)
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_FILE = "identity.key"
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
# libp2p peer ID of an Ed25519 key: identity multihash (0x00, length 36) of the protobuf
# PublicKey{Type=Ed25519 (field 1 = 1), Data (field 2, 32 bytes)}: see libp2p specs peer-ids.md.
_PEER_ID_PREFIX = bytes.fromhex("002408011220")


class IdentityError(Exception):
    """The identity file is missing, unreadable or unsafe; the message says what to do."""


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        idx = _B58.find(ch)
        if idx < 0:
            raise ValueError(f"invalid base58 character {ch!r}")
        n = n * 58 + idx
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p peer ID (base58btc) of a raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, got {len(public_key)}")
    return b58encode(_PEER_ID_PREFIX + public_key)


def public_key_from_peer_id(peer_id: str) -> bytes:
    """Inverse of `peer_id_from_public_key`; ValueError for anything that is not an Ed25519 peer ID."""
    raw = b58decode(peer_id)
    if len(raw) != 38 or not raw.startswith(_PEER_ID_PREFIX):
        raise ValueError(f"{peer_id!r} is not an Ed25519 libp2p peer ID")
    return raw[6:]


def check_blockable(peer: str, me: str) -> None:
    """ValueError, saying what to give instead, unless `peer` is another node's peer ID (what `ffnode block` and
    the API's /v1/block accept)."""
    try:
        public_key_from_peer_id(peer)
    except ValueError as exc:
        raise ValueError(f"{exc}: give a peer ID as `ffnode peers` shows it") from None
    if peer == me:
        raise ValueError("that is this node's own peer ID: a node cannot block itself")


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Identity:
    seed: bytes  # 32-byte Ed25519 private key seed; never leaves the home

    @property
    def _key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def public_key(self) -> bytes:
        return self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def peer_id(self) -> str:
        return peer_id_from_public_key(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:  # never print the seed
        return f"Identity(peer_id={self.peer_id})"


def create_identity(home: Path) -> Identity:
    """Write a fresh key to `home/identity.key` with mode 0600; refuses to overwrite an existing one."""
    path = home / KEY_FILE
    if path.exists():
        raise IdentityError(f"{path} already exists: this home is initialised (remove the home to start over)")
    seed = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(seed)
    return Identity(seed)


def load_identity(home: Path) -> Identity:
    path = home / KEY_FILE
    try:
        seed = path.read_bytes()
    except FileNotFoundError:
        raise IdentityError(f"no identity at {path}: run `ffnode init --home {home}` first") from None
    if len(seed) != 32:
        raise IdentityError(f"{path} is not a 32-byte Ed25519 seed ({len(seed)} bytes): restore it from backup")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise IdentityError(f"{path} is readable by other users: run `chmod 600 {path}`")
    return Identity(seed)
