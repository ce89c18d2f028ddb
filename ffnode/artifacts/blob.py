"""Blobs: safetensors weight files that name their owner in their own header.

A manifest's signature covers the blob's sha256, so nobody can change a signed blob; but anyone can sign a
new manifest naming the same bytes. If that were allowed, a copy under another key would shadow the owner's
artifact (a late joiner sees the copy first) and outlive the owner's revocation. So the bytes say whose
they are: the safetensors header's `__metadata__` holds `{"owner": <peer ID>}`, and a manifest is only valid
for a blob whose header names the manifest's owner (protocol/README.md, "Blob ownership"). A copy with
altered bytes (another owner written into the header) is a different blob with a different hash: it is the
copier's own artifact, and what this rule cannot prevent (docs/security.md).

The header is read here with the standard library alone (8-byte little-endian length, then JSON), bounded,
before any weight is parsed.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

OWNER_KEY = "owner"
MAX_HEADER_BYTES = 1 << 20  # a UNet's header lists a few hundred tensors: ~30 KB


class BlobFormatError(ValueError):
    """The file is not a safetensors file with an owner in its header; the message says what is wrong."""


def blob_owner(path: Path) -> str:
    """The peer ID a blob's safetensors header names as its owner."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise BlobFormatError("shorter than a safetensors header")
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_HEADER_BYTES:
            raise BlobFormatError(f"safetensors header of {n} bytes exceeds {MAX_HEADER_BYTES}")
        raw = f.read(n)
    if len(raw) != n:
        raise BlobFormatError("truncated safetensors header")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise BlobFormatError("safetensors header is not JSON") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    owner = meta.get(OWNER_KEY) if isinstance(meta, dict) else None
    if not isinstance(owner, str) or not owner:
        raise BlobFormatError(f"safetensors header names no {OWNER_KEY!r} in __metadata__")
    return owner


def weights_to_bytes(weights: dict[str, Any], owner: str) -> bytes:
    """The blob of an artifact: a safetensors file naming its owner in the header; its bytes depend on the tensors
    and the owner alone. (torch is imported by whoever writes weights; reading a blob's owner needs none.)"""
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in weights.items()}, metadata={OWNER_KEY: owner})
