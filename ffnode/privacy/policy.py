"""Whether a factory's audit figures are good enough to publish it (own factories) or to use it (peers').

The figures travel in the factory's signed manifest as `meta.audit` (protocol/README.md, "Factory audit"),
so every site judges them under its own thresholds with the same rule:

    refuse if  n_holdout < min_holdout
           or  memorised > max_memorised
           or  dcr_close > max_dcr_close
           or  mia_auc - z * se > max_mia_auc,  se = sqrt((m + n + 1) / (12 m n))
           or  mia_tpr_1pct > max_mia_tpr_1pct

where m and n are the members and non-members attacked and se is the AUC's standard deviation when the
attack learns nothing (the Mann-Whitney null): with the 20 held-out images (and 40 members) of a small class
it is 0.080, and a bare `mia_auc > 0.55` would then refuse a quarter of the factories that leak nothing.
z = 0 is that bare rule, for a site that prefers refusing an honest factory to using a leaky one.

The figures are the owner's word: signed, so attributable, but nobody else can recompute them (they need
the owner's images). docs/privacy.md says what that does and does not buy. Pure functions of plain values;
the store caches their verdict per manifest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ffnode.config import PrivacyConfig

AUDIT_VERSION = 1
AUDIT_FILE = "audit.json"  # in a factory's work folder: the audits made, and the verdict (the owner's record)
DISTANCE = "l2-pixel"  # the one distance of version 1: what every reader can recompute and picture

# the figures a version-1 audit carries, and their types (floats may arrive as ints from other encoders)
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "v": int,
    "distance": str,
    "step": int,
    "samples": int,
    "n_train": int,
    "n_holdout": int,
    "memorised": (float, int),
    "nn_ratio_min": (float, int),
    "dcr_close": (float, int),
    "dcr_ratio": (float, int),
    "mia_members": int,
    "mia_auc": (float, int),
    "mia_tpr_1pct": (float, int),
    "mia_tpr_01pct": (float, int),
    "levels": list,
    "draws": int,
    "seconds": (float, int),
}
_SHARES = ("memorised", "dcr_close", "mia_auc", "mia_tpr_1pct", "mia_tpr_01pct")  # in [0, 1]


@dataclass(frozen=True)
class AuditPolicy:
    """Thresholds on a factory's audit figures (config [privacy]; defaults and reasons in docs/privacy.md)."""

    max_memorised: float = 0.01
    max_dcr_close: float = 0.25
    max_mia_auc: float = 0.55
    mia_z: float = 1.645  # one-sided 95 %: an honest factory is refused 1 time in 20 at worst
    max_mia_tpr_1pct: float = 1.0
    min_holdout: int = 10

    @classmethod
    def of(cls, p: PrivacyConfig) -> AuditPolicy:
        return cls(p.max_memorised, p.max_dcr_close, p.max_mia_auc, p.mia_z, p.max_mia_tpr_1pct, p.min_holdout)


def audit_of(meta: dict[str, Any]) -> dict[str, Any] | str:
    """The audit figures in a manifest's meta, or why there are none a site can judge."""
    audit = meta.get("audit")
    if audit is None:
        return "it carries no privacy audit"
    if not isinstance(audit, dict):
        return "its privacy audit is not a map"
    # a peer's values never go into the reason as they are: a reason is logged and shown, and must stay short
    if audit.get("v") != AUDIT_VERSION or type(audit.get("v")) is not int:
        return f"its privacy audit is not of version {AUDIT_VERSION}, the one this node reads"
    if audit.get("distance") != DISTANCE:
        return f"its privacy audit does not measure the distance {DISTANCE!r}"
    for key, kind in _FIELDS.items():
        value = audit.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"its privacy audit lacks a valid {key!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"its privacy audit's {key!r} is not finite"
    if any(not 0 <= audit[k] <= 1 for k in _SHARES):
        return "its privacy audit has shares outside 0..1"
    if min(audit["samples"], audit["n_train"], audit["n_holdout"], audit["draws"]) < 1 or audit["step"] < 0:
        return "its privacy audit counts no samples, training or held-out images or noise draws"
    if audit["mia_members"] < audit["n_holdout"]:  # fewer would shrink the noise allowance's basis at will
        return "its privacy audit attacks fewer members than it held out"
    levels = audit["levels"]
    if not 1 <= len(levels) <= 64 or not all(type(x) is int and 0 <= x <= 1000 for x in levels):
        return "its privacy audit's levels are not 1 to 64 per-mille noise levels"
    return audit


def mia_se(members: int, nonmembers: int) -> float:
    """The standard deviation of the attack's AUC when it learns nothing (Mann-Whitney null)."""
    return math.sqrt((members + nonmembers + 1) / (12 * members * nonmembers))


def refusals(audit: dict[str, Any], policy: AuditPolicy) -> list[str]:
    """Why a factory with these (valid) figures must not be used under `policy`; empty if it may be."""
    why = []
    if audit["n_holdout"] < policy.min_holdout:
        why.append(f"only {audit['n_holdout']} held-out images (min_holdout {policy.min_holdout})")
    if audit["memorised"] > policy.max_memorised:
        why.append(
            f"{audit['memorised']:.1%} of samples copy a training image (max_memorised {policy.max_memorised:.1%})"
        )
    if audit["dcr_close"] > policy.max_dcr_close:
        why.append(
            f"{audit['dcr_close']:.1%} of samples sit closer to the training set than 95% of held-out images "
            f"(max_dcr_close {policy.max_dcr_close:.1%})"
        )
    bound = audit["mia_auc"] - policy.mia_z * mia_se(audit["mia_members"], audit["n_holdout"])
    if bound > policy.max_mia_auc:
        why.append(
            f"membership inference AUC {audit['mia_auc']:.3f} (at least {bound:.3f}) over max_mia_auc "
            f"{policy.max_mia_auc:.3f}"
        )
    if audit["mia_tpr_1pct"] > policy.max_mia_tpr_1pct:
        why.append(
            f"membership inference flags {audit['mia_tpr_1pct']:.1%} of members at 1% false positives "
            f"(max_mia_tpr_1pct {policy.max_mia_tpr_1pct:.1%})"
        )
    return why


def judge(meta: dict[str, Any], policy: AuditPolicy) -> str | None:
    """None if a factory with this manifest meta may be used under `policy`, else the reason it may not."""
    audit = audit_of(meta)
    if isinstance(audit, str):
        return audit
    why = refusals(audit, policy)
    return "; ".join(why) if why else None
