"""Whether a factory's audit figures are good enough to publish it (own factories) or to use it (peers').

The figures travel in the factory's signed manifest as `meta.audit` (protocol/README.md, "Factory audit"),
so every site judges them under its own thresholds with the same rule:

    refuse if  n_holdout < min_holdout
           or  memorised > max_memorised           (and feature_memorised, if the audit has the feature figures)
           or  dcr_close > max_dcr_close           (and feature_dcr_close)
           or  A_auc - z * se > max_mia_auc,  se = sqrt((m + n + 1) / (12 m n))
           or  A_tpr_1pct > max_mia_tpr_1pct

for each attack A the audit ran: mia (the loss attack) and, if the audit has its figures, pia (PIA), on the
same m members and n non-members, so under one bar: a factory is refused when either attack is confidently
above it. se is the AUC's standard deviation when the attack learns nothing (the Mann-Whitney null): with the
20 held-out images (and 40 members) of a small class it is 0.080, and a bare `mia_auc > 0.55` would then
refuse a quarter of the factories that leak nothing. z = 0 is that bare rule, for a site that prefers
refusing an honest factory to using a leaky one. Two attacks at z each refuse an honest factory at most twice
as often as one (the union bound); the power below is the loss attack's alone, a lower bound for the pair.

A factory that passes is not therefore private: with few held-out images the rule cannot see a leak. Its
*power* is the chance that it refuses a factory whose attack truly reaches AUC A1 = 0.60:

    power = 1 - Phi((max_mia_auc + z * se - A1) / se1),   se1 = the AUC's standard deviation at A1 (Hanley-McNeil:
            se1^2 = (A1 (1 - A1) + (m - 1)(Q1 - A1^2) + (n - 1)(Q2 - A1^2)) / (m n), Q1 = A1 / (2 - A1),
            Q2 = 2 A1^2 / (1 + A1))

Three verdicts, then: **fails** (a refusal above), **inconclusive** (it passes, but power < 0.80: 20 held-out
images and 40 members give 0.14, 500 and 500 give 0.87), **passes**. `[privacy] inconclusive` says what a site
does with inconclusive factories, its own and its peers': "use" (the default: publish and use them, flagged) or
"refuse" (a refusal).

A site may also ask for a proven bound: with `[privacy] max_epsilon` set, a peer's factory is used only if its
signed `meta.dp` (protocol/README.md, "Differential privacy") says it was trained with DP-SGD at epsilon <=
max_epsilon and delta <= 1 / n_train; a factory without `meta.dp` is refused (`dp_refusal`).

The figures are the owner's word: signed, so attributable, but nobody else can recompute them (they need
the owner's images). docs/privacy.md says what that does and does not buy. Pure functions of plain values;
the store caches their verdict per manifest.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ffnode.config import PrivacyConfig

DETECT_AUC = 0.60  # the leak an audit must be able to see ...
MIN_POWER = 0.80  # ... this often, or its pass is inconclusive
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
# optional groups (r7), all of a group's keys or none: PIA, the second attack, and the copy check under features
FEATURE = "randconv-1"  # the one feature distance this node reads (ffnode/privacy/attacks.py)
_PIA = {"pia_auc": (float, int), "pia_tpr_1pct": (float, int), "pia_tpr_01pct": (float, int), "pia_level": int}
_FEATURE = {
    "feature": str,
    "feature_memorised": (float, int),
    "feature_nn_ratio_min": (float, int),
    "feature_dcr_close": (float, int),
    "feature_dcr_ratio": (float, int),
}
_OPTIONAL_SHARES = ("pia_auc", "pia_tpr_1pct", "pia_tpr_01pct", "feature_memorised", "feature_dcr_close")
# meta.dp: the DP-SGD run's (epsilon, delta), the accountant that gave epsilon and what it was given
_DP_FIELDS: dict[str, type | tuple[type, ...]] = {
    "epsilon": (float, int),
    "delta": (float, int),
    "accountant": str,
    "noise_multiplier": (float, int),
    "max_grad_norm": (float, int),
    "sample_rate": (float, int),
    "steps": int,
}
DP_ACCOUNTANTS = ("rdp", "prv", "gdp")  # Opacus' accountants: the ones a reader may know how to recompute


@dataclass(frozen=True)
class AuditPolicy:
    """Thresholds on a factory's audit figures (config [privacy]; defaults and reasons in docs/privacy.md)."""

    max_memorised: float = 0.01
    max_dcr_close: float = 0.25
    max_mia_auc: float = 0.55
    mia_z: float = 1.645  # one-sided 95 %: an honest factory is refused 1 time in 20 at worst
    max_mia_tpr_1pct: float = 1.0
    min_holdout: int = 10
    inconclusive: str = "use"  # what to do with a factory whose audit cannot tell: "use" or "refuse"
    max_epsilon: float = 0.0  # > 0: only factories trained with DP-SGD at epsilon <= this (meta.dp); 0: not asked

    @classmethod
    def of(cls, p: PrivacyConfig) -> AuditPolicy:
        return cls(
            p.max_memorised, p.max_dcr_close, p.max_mia_auc, p.mia_z, p.max_mia_tpr_1pct, p.min_holdout,
            p.inconclusive, p.max_epsilon,
        )  # fmt: skip


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
    groups = [g for g in (_PIA, _FEATURE) if any(k in audit for k in g)]
    for key, kind in (_FIELDS | {k: v for g in groups for k, v in g.items()}).items():
        value = audit.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"its privacy audit lacks a valid {key!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"its privacy audit's {key!r} is not finite"
    if any(not 0 <= audit[k] <= 1 for k in (*_SHARES, *(k for k in _OPTIONAL_SHARES if k in audit))):
        return "its privacy audit has shares outside 0..1"
    if _FEATURE in groups and audit["feature"] != FEATURE:
        return f"its privacy audit's feature distance is not {FEATURE!r}, the one this node reads"
    if _PIA in groups and not 0 <= audit["pia_level"] <= 1000:
        return "its privacy audit's pia_level is not a per-mille noise level"
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


def mia_power(members: int, nonmembers: int, policy: AuditPolicy) -> float:
    """The chance that `policy`'s AUC rule refuses a factory whose attack truly reaches DETECT_AUC (module doc)."""
    a, m, n = DETECT_AUC, members, nonmembers
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se1 = math.sqrt((a * (1 - a) + (m - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (m * n))
    bar = policy.max_mia_auc + policy.mia_z * mia_se(m, n)
    return 0.5 * math.erfc((bar - a) / se1 / math.sqrt(2))  # 1 - Phi(x) = erfc(x / sqrt 2) / 2


def verdict(audit: dict[str, Any], policy: AuditPolicy) -> tuple[str, float]:
    """("fails" | "inconclusive" | "passes", the attack's power) for valid figures under `policy`."""
    power = mia_power(audit["mia_members"], audit["n_holdout"], policy)
    if refusals(audit, dataclasses.replace(policy, inconclusive="use")):
        return "fails", power
    return ("inconclusive" if power < MIN_POWER else "passes"), power


def verdict_text(audit: dict[str, Any], policy: AuditPolicy) -> str:
    """What `ffnode audit` and the API show: "passes", "inconclusive (power 14%)", or the refusals."""
    word, power = verdict(audit, policy)
    if word == "fails":
        return "; ".join(refusals(audit, policy))
    if word == "passes":
        return word
    refused = ", refused (privacy.inconclusive)" if policy.inconclusive == "refuse" else ""
    return f"inconclusive (power {power:.0%} to see AUC {DETECT_AUC:.2f}{refused})"


def audit_verdict(meta: dict[str, Any], policy: AuditPolicy) -> dict[str, Any]:
    """A factory's privacy column (`ffnode artifacts`): {"verdict": passes | inconclusive | fails | unaudited,
    "power": the attack's power or None}, under `policy`."""
    audit = audit_of(meta)
    if isinstance(audit, str):
        return {"verdict": "unaudited", "power": None}
    word, power = verdict(audit, policy)
    return {"verdict": word, "power": round(power, 4)}


def signed_verdict(audit: dict[str, Any], policy: AuditPolicy) -> dict[str, Any]:
    """The owner's verdict and power, as they go into the manifest's `meta.audit` beside the figures (receivers
    judge the figures under their own thresholds; these say what the owner's said)."""
    word, power = verdict(audit, policy)
    return {"verdict": word, "power": round(power, 4)}


def refusals(audit: dict[str, Any], policy: AuditPolicy) -> list[str]:
    """Why a factory with these (valid) figures must not be used under `policy`; empty if it may be."""
    why = []
    if audit["n_holdout"] < policy.min_holdout:
        why.append(f"only {audit['n_holdout']} held-out images (min_holdout {policy.min_holdout})")
    copies = [("", "")] + ([("feature_", f" in {FEATURE} features")] if "feature" in audit else [])
    for key, where in copies:
        if audit[f"{key}memorised"] > policy.max_memorised:
            why.append(
                f"{audit[f'{key}memorised']:.1%} of samples copy a training image{where} "
                f"(max_memorised {policy.max_memorised:.1%})"
            )
        if audit[f"{key}dcr_close"] > policy.max_dcr_close:
            why.append(
                f"{audit[f'{key}dcr_close']:.1%} of samples sit closer to the training set than 95% of held-out "
                f"images{where} (max_dcr_close {policy.max_dcr_close:.1%})"
            )
    se = mia_se(audit["mia_members"], audit["n_holdout"])
    attacks = [("mia", "membership inference")] + ([("pia", "PIA membership inference")] if "pia_auc" in audit else [])
    for key, name in attacks:  # the same bar for every attack: a factory is refused if any is confidently above it
        bound = audit[f"{key}_auc"] - policy.mia_z * se
        if bound > policy.max_mia_auc:
            why.append(
                f"{name} AUC {audit[f'{key}_auc']:.3f} (at least {bound:.3f}) over max_mia_auc {policy.max_mia_auc:.3f}"
            )
        if audit[f"{key}_tpr_1pct"] > policy.max_mia_tpr_1pct:
            why.append(
                f"{name} flags {audit[f'{key}_tpr_1pct']:.1%} of members at 1% false positives "
                f"(max_mia_tpr_1pct {policy.max_mia_tpr_1pct:.1%})"
            )
    power = mia_power(audit["mia_members"], audit["n_holdout"], policy)
    if policy.inconclusive == "refuse" and power < MIN_POWER:
        why.append(
            f"inconclusive: {audit['n_holdout']} held-out images give the attack {power:.0%} power to see AUC "
            f'{DETECT_AUC:.2f} (privacy.inconclusive = "refuse")'
        )
    return why


def dp_of(meta: dict[str, Any]) -> dict[str, Any] | str:
    """The DP-SGD figures in a manifest's meta (`meta.dp`), or why there are none a site can judge."""
    dp = meta.get("dp")
    if dp is None:
        return "it was not trained with differential privacy (no meta.dp)"
    if not isinstance(dp, dict):
        return "its meta.dp is not a map"
    for key, kind in _DP_FIELDS.items():
        value = dp.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"its meta.dp lacks a valid {key!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"its meta.dp's {key!r} is not finite"
    if dp["accountant"] not in DP_ACCOUNTANTS:
        return f"its meta.dp names an accountant other than {', '.join(DP_ACCOUNTANTS)}"
    if not (dp["epsilon"] >= 0 and 0 < dp["delta"] < 1 and 0 < dp["sample_rate"] <= 1 and dp["steps"] >= 1):
        return "its meta.dp has epsilon < 0, delta or sample_rate outside (0, 1), or no steps"
    if dp["noise_multiplier"] <= 0 or dp["max_grad_norm"] <= 0:
        return "its meta.dp adds no noise or clips at no norm"
    return dp


def dp_refusal(meta: dict[str, Any], max_epsilon: float) -> str | None:
    """Why a factory with this meta is refused under `max_epsilon` (0: never), or None. delta must be at most
    1 / n_train: above it, publishing one training image outright would meet the bound."""
    if max_epsilon <= 0:
        return None
    dp = dp_of(meta)
    if isinstance(dp, str):
        return dp
    if dp["epsilon"] > max_epsilon:
        return f"differential privacy epsilon {dp['epsilon']:.3g} over max_epsilon {max_epsilon:.3g}"
    n = meta.get("n_train")
    if type(n) is not int or n < 1:
        return "it states no n_train to judge its meta.dp's delta against"
    if dp["delta"] > 1 / n:
        return f"differential privacy delta {dp['delta']:.3g} over 1 / n_train = {1 / n:.3g}"
    return None


def judge(meta: dict[str, Any], policy: AuditPolicy) -> str | None:
    """None if a factory with this manifest meta may be used under `policy`, else the reason it may not."""
    audit = audit_of(meta)
    if isinstance(audit, str):
        return audit
    why = refusals(audit, policy)
    if (dp := dp_refusal(meta, policy.max_epsilon)) is not None:
        why.append(dp)
    return "; ".join(why) if why else None
