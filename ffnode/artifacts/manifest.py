"""Manifests: the signed description of one weight blob (a factory or an expert).

A manifest is small (a few KB) so it can be gossiped; the weights it names travel over the blob
protocol and are accepted only if their length and sha256 match what the owner signed here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from ffnode.artifacts.codec import (
    MAX_CLASS_LIST,
    WireError,
    body_id,
    check_class_list,
    check_fields,
    is_hex_id,
    open_envelope,
    seal,
)
from ffnode.identity import Identity

KINDS = ("factory", "expert")
MAX_CLASSES = MAX_CLASS_LIST  # a manifest's distinct label indices
MAX_LINEAGE = 800  # 800 IDs of 67 bytes still fit a 64 KiB envelope
MAX_BLOB_BYTES = 4 * 2**30  # a generous bound on weight files, so nobody can announce an endless blob

_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "kind": str,
    "owner": str,
    "owner_key": bytes,
    "federation": str,
    "classes": list,  # label indices into class_list
    "class_list": list,  # the federation's class names in label order: part of its identity
    "arch": dict,  # the architecture/training config that rebuilds the module from the blob
    "blob": str,  # sha256 of the safetensors bytes, lowercase hex: the blob's name
    "size": int,  # exact byte length of the blob
    "created": int,  # unix time, milliseconds
    "seq": int,  # per-owner sequence number, unique per signed message of that owner
    "lineage": list,  # experts: IDs of the factories they were trained from; factories: []
    "seed": int,  # training seed (experts: also the synthesis seed)
    "meta": dict,  # training summary: images seen, seconds, final loss, ...
}


@dataclass(frozen=True)
class Manifest:
    kind: str
    owner: str
    owner_key: bytes
    federation: str
    classes: list[int]
    class_list: list[str]
    arch: dict[str, Any]
    blob: str
    size: int
    created: int
    seq: int
    lineage: list[str] = field(default_factory=list)
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def id(self) -> str:  # hashing the canonical body is not free, and IDs are used in every lookup
        return body_id(self.body())

    def body(self) -> dict[str, Any]:
        return asdict(self)

    def seal(self, identity: Identity) -> bytes:
        if identity.public_key != self.owner_key:
            raise ValueError("a manifest can only be signed by its owner")
        return seal("manifest", self.body(), identity)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Manifest:
        check_fields(body, _SCHEMA)
        if body["kind"] not in KINDS:
            raise WireError(f"unknown artifact kind {body['kind']!r}")
        if not is_hex_id(body["blob"]):
            raise WireError("blob must be a 64-character lowercase hex sha256")
        if not 0 <= body["size"] <= MAX_BLOB_BYTES or body["seq"] < 0:
            raise WireError(f"size must be 0..{MAX_BLOB_BYTES} and seq non-negative")
        classes, lineage = body["classes"], body["lineage"]
        n = len(check_class_list(body["class_list"]))
        if not classes or len(classes) > MAX_CLASSES or not all(type(c) is int and 0 <= c < n for c in classes):
            raise WireError(f"classes must be a non-empty list of label indices into class_list (0..{n - 1})")
        if len(set(classes)) != len(classes):
            raise WireError("classes names a label twice")
        if len(lineage) > MAX_LINEAGE or not all(is_hex_id(x) for x in lineage):
            raise WireError("lineage must list artifact IDs (64-character hex)")
        if body["kind"] == "factory" and lineage:
            raise WireError("a factory has no lineage")
        return cls(**body)


def open_manifest(data: bytes) -> Manifest:
    """Decode, verify the owner's signature and validate the schema; WireError says why not."""
    _, body = open_envelope(data, ("manifest",))
    return Manifest.from_body(body)
