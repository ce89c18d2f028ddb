"""The node's configuration: one TOML file in its home, written by `ffnode init`, read at every start.

Every field an operator may edit is here with its default; a bad value gets a ConfigError that names
the field and says what to write instead.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import tomli_w

from ffnode.artifacts.codec import WireError, check_class_list, is_hex_id

CONFIG_FILE = "config.toml"
POE_RULES = ("prior", "product")  # how queries combine the experts: the math is in ffnode/poe.py


class ConfigError(ValueError):
    """A config or home that cannot be used; the message says what to fix."""


def check_poe_rule(rule: str, what: str = "PoE rule") -> str:
    """`rule` if it names a PoE rule, else a ValueError listing them (config, CLI and queries all ask here)."""
    if rule not in POE_RULES:
        raise ValueError(f"unknown {what} '{rule}': use one of {', '.join(POE_RULES)}")
    return rule


@dataclass
class NetworkConfig:
    # Concrete interfaces only: a 0.0.0.0 listener would advertise an address no peer can dial.
    listen: list[str] = field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/4747"])
    bootstrap: list[str] = field(default_factory=list)  # full multiaddrs with /p2p/<peer id>
    mdns: bool = False  # LAN discovery; off by default so a node only talks to peers it was told about
    sync_interval_s: float = 30.0  # re-ask 8 connected peers (in turns) for their inventory: gossip is best-effort
    max_peers: int = 32  # connections discovery keeps up (the target degree): every member of a federation this size
    relays: list[str] = field(default_factory=list)  # relay multiaddrs (with /p2p/) to hold a reservation on
    reachable: bool = True  # false behind NAT or a drop-inbound firewall: advertise only relayed addresses
    hole_punch: bool = True  # DCUtR: try to make a relayed connection direct
    relay_service: bool = False  # relay for other sites (limits.relay_*); a relay sees only encrypted bytes
    relay_for: list[str] = field(default_factory=list)  # with relay_service: peer IDs that may reserve; empty: any


@dataclass
class FederationConfig:
    name: str = "digits"  # the gossip topic is derived from it; nodes of other federations are ignored
    classes: list[str] = field(default_factory=list)  # the same names in the same order on every node
    image_shape: str = ""  # "HxWxC", the same on every node: queries and peers' models must fit it ("": the data's)
    allowed_publishers: list[str] = field(default_factory=list)  # peer IDs; empty = any signed peer
    denied_publishers: list[str] = field(default_factory=list)  # peer IDs whose artifacts are never used (ffnode block)
    quarantined: list[str] = field(default_factory=list)  # artifact IDs kept but never used (ffnode quarantine)
    charter: str = ""  # ID of the charter this site pins (ffnode join): only its members publish; "": open


@dataclass
class DataConfig:
    spec: str = "digits"  # digits | bloodmnist | retinamnist | cifar10 | PATH.npz | image-folder PATH
    split: str = "train"
    bit_depth: int = 0  # 16-bit files are read at this depth (ffnode init writes what it found); 0: each folder's own


@dataclass
class LearningConfig:
    profile: str = "default"  # named sizes and step counts: ffnode/profiles.py
    seed: int = 0  # factories, synthesis and the expert are deterministic given it
    synth_per_class: int = 0  # 0 = the profile's count
    factory_steps: int = 0  # 0 = the profile's; fewer steps, faster and rougher factories
    synth_own_classes: bool = False  # also synthesise the classes this node holds real data for
    deadline_s: float = 0.0  # >0: train the expert after this many seconds even if classes are missing
    # once the own factories are done, wait at most this long after the last factory arrived for a class still
    # missing (a peer may have withheld it, or nobody holds it); the expert is retrained when one comes. 0: for ever
    patience_s: float = 600.0
    threads: int = 0  # torch CPU threads; 0 = torch's default
    poe_rule: str = "prior"  # how queries combine the experts: "prior" or "product" (the paper's); ffnode/poe.py


@dataclass
class PrivacyConfig:
    """The privacy audit (ffnode/privacy/): of own factories before they are published, and what this site
    asks of its peers' factories before it samples them. docs/privacy.md gives the reasons for each default."""

    audit: bool = True  # audit every own factory; one that fails is withheld (the log and `ffnode status` say why)
    require_audit: bool = True  # use a peer's factory only if its signed audit passes the thresholds below
    snapshots: int = 3  # if the final factory fails: audit it at 3/4, 1/2, 1/4 of training, publish the latest passing
    audit_samples: int = 500  # N samples for the memorisation figures
    holdout_fraction: float = 0.1  # of each class, kept out of factory training (the audit's non-members)
    holdout_min: int = 20
    holdout_max: int = 500
    max_memorised: float = 0.01  # share of samples with NN1/NN2 < 1/3
    max_dcr_close: float = 0.25  # share of samples closer to the training set than 95 % of held-out images are
    max_mia_auc: float = 0.55  # membership inference AUC, less mia_z of its no-leak standard deviations
    mia_z: float = 1.645
    max_mia_tpr_1pct: float = 1.0  # not enforced by default: 20-500 held-out images cannot estimate it (privacy.md)
    min_holdout: int = 10  # held-out images an audit must have used
    inconclusive: str = "use"  # a factory whose audit cannot see AUC 0.60 (power < 0.8): "use" (flagged) or "refuse"
    # differential privacy (docs/privacy.md): own factories trained with DP-SGD (Opacus), noise calibrated by its
    # accountant so that the whole run spends at most (dp_epsilon, dp_delta); (epsilon, delta) signed as meta.dp
    dp_epsilon: float = 0.0  # > 0: train own factories with DP-SGD at this epsilon; 0: without DP
    dp_delta: float = 0.0  # 0: 1 / (10 n), n the factory's training images
    dp_max_grad_norm: float = 1.0  # each image's gradient is clipped to this L2 norm before the noise is added
    max_epsilon: float = 0.0  # > 0: use a peer's factory only if its meta.dp says epsilon <= this (none: refused)


@dataclass
class LimitsConfig:
    """What peers can make this node spend. Each bound is per publisher (an owner key) or per peer (a
    connection), so one hostile party costs only its own share; docs/security.md gives the reasons."""

    manifests_per_publisher: int = 256  # held manifests of one owner (an honest site: a factory per class + experts)
    blob_mb_per_publisher: int = 4096  # weight bytes of one owner's unrevoked artifacts
    store_mb: int = 32768  # weight bytes of all verified, unrevoked artifacts
    publishers: int = 1024  # distinct owners whose manifests are held
    tombstones_per_publisher: int = 16384  # IDs one owner may revoke here (revoking only held ones: always)
    connections: int = 256  # libp2p connections in all (a member needs one per peer, up to network.max_peers)
    inbound_connections: int = 128  # accepted ones at once, handshakes included
    connections_per_peer: int = 4  # of one peer ID
    connections_per_ip: int = 64  # of one remote IP address (peer IDs are free to make): raise it for big testnets
    factory_params: int = 20_000_000  # a peer's factory UNet (the gpu profile's: 6.5 M)
    expert_params: int = 20_000_000  # a peer's expert ResNet (the gpu profile's: 1.2 M)
    sample_steps: int = 50  # sampler steps a peer's factory may ask of this node per image batch (profiles: 8-25)
    streams_per_peer: int = 8  # sync and blob requests one peer may have open at this node at once
    peers_tracked: int = 4096  # peers remembered for `ffnode peers` (the least recently seen are forgotten)
    bad_items: int = 8192  # rejected envelopes remembered, so a peer re-offering one costs no re-check
    peer_records: int = 1024  # signed peer records held by discovery (members, and candidates still to dial)
    records_per_peer: int = 64  # records learnt through one peer of peers that are not (yet) members
    relay_reservations: int = 64  # with network.relay_service: sites holding a slot on this relay at once
    relay_circuits_per_peer: int = 8  # relayed connections to one reserved site at once
    relay_circuit_mb: int = 16384  # bytes one relayed connection may carry, both ways; then it is cut
    pending_grace_s: float = 60.0  # how long one publisher's unarrived factory may hold the expert back, once


@dataclass
class JobsConfig:
    """Where and how the learning runs (ffnode/jobs/): every training, synthesis and retrain is a job in its own
    process, so the node process stays light and a peer's model that crashes, hangs or eats memory costs one job.
    A job over a limit is killed and blamed on the artifact it was working on (docs/operators.md)."""

    runner: str = "local"  # "local": worker processes on this machine; "ray": a Ray cluster (address below)
    address: str = "auto"  # runner = "ray": "auto" (a cluster this machine belongs to) or "ray://host:10001"
    workers: int = 0  # jobs at once (0: one per two cores, at least 1); with `slots`, across every node sharing it
    slots: str = ""  # a folder nodes on one machine share, so together they run at most `workers` jobs at once
    forkserver: str = ""  # the socket of a fork server nodes on one machine share: jobs start warm ("": afresh)
    memory_mb: int = 6144  # resident memory one job may hold; then it is killed
    cpu_s: int = 86400  # CPU seconds one job may use (RLIMIT_CPU); then it is killed
    wall_s: float = 21600.0  # seconds one job may run; then it is killed
    gpus: float = 0.0  # runner = "ray": GPUs each training job asks the cluster for
    query_warm: bool = True  # start the query worker (experts loaded) once the node is ready; false: at the first query
    query_idle_s: float = 0.0  # stop the query worker after this many idle seconds (0: keep it while the node runs)
    # a folder of this site's own trained factories, keyed by all that determines them (jobs/factorycache.py), so a
    # sweep over synthesis, expert or PoE settings never trains one twice; relative to the home, or absolute, and
    # may be shared by the sites of a machine. "": off, since within a home work/factory-<label>/ already resumes
    # training and keeps its audits, and a cache outside it is one more copy of data-derived weights for the
    # operator to hold (a revocation or `leave` deletes the entries of this site's images from it)
    factory_cache: str = ""


@dataclass
class ApiConfig:
    """The HTTP API, metrics and status page (ffnode/api/): off unless `listen` names an address. Reads are open on
    loopback; anything from beyond it, and every action that changes something, needs the home's token
    (`ffnode api-token`)."""

    listen: str = ""  # "host:port", e.g. "127.0.0.1:8470"; "": no HTTP server at all
    max_body_mb: int = 64  # a request body larger than this is refused (413)
    max_images: int = 4096  # images one query may carry
    concurrency: int = 16  # requests served at once; more get 503 at once
    max_connections: int = 64  # HTTP connections open at once; more are closed as they come
    timeout_s: float = 60.0  # a request may run this long; then 503
    allowed_hosts: list[str] = field(default_factory=list)  # Host names loopback clients may read by, untokened


@dataclass
class Config:
    network: NetworkConfig = field(default_factory=NetworkConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    data: DataConfig = field(default_factory=DataConfig)
    learning: LearningConfig = field(default_factory=LearningConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    api: ApiConfig = field(default_factory=ApiConfig)

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """The federation's image shape (H, W, C), or None when the config leaves it to the local data."""
        if not self.federation.image_shape:
            return None
        h, w, c = (int(x) for x in self.federation.image_shape.split("x"))
        return h, w, c

    @property
    def topic(self) -> str:
        return f"/ffnode/1/{self.federation.name}/announce"

    def save(self, home: Path) -> None:
        """Write config.toml whole or not at all (temp file, fsync, rename): a reader never sees half of it."""
        path = home / CONFIG_FILE
        tmp = path.with_name(f".{CONFIG_FILE}.{os.getpid()}.{threading.get_ident()}")
        with open(tmp, "w") as f:
            f.write(tomli_w.dumps(asdict(self)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, home: Path) -> Config:
        path = home / CONFIG_FILE
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"no {path}: run `ffnode init --home {home}` first") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML ({exc}): fix or re-create it") from None
        unknown = set(raw) - set(_SECTIONS)
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; expected {sorted(_SECTIONS)}")
        parts = {name: _section(sc, raw.get(name, {}), f"{path} [{name}]") for name, sc in _SECTIONS.items()}
        config = cls(**parts)
        config.validate(path)
        return config

    def validate(self, where: Path | str = CONFIG_FILE) -> None:
        if not self.federation.classes:
            raise ConfigError(f"{where}: federation.classes is empty: list the class names, in order")
        try:
            check_class_list(self.federation.classes)
        except WireError as exc:
            raise ConfigError(f"{where}: federation.classes: {exc}") from None
        if not 0 < len(self.federation.name) <= 64 or "/" in self.federation.name:
            raise ConfigError(f"{where}: federation.name must be a name of 1 to 64 characters without '/'")
        if self.federation.charter and not is_hex_id(self.federation.charter):
            raise ConfigError(f"{where}: federation.charter must be a charter ID (64 hex characters) or empty")
        for addr in self.network.listen + self.network.bootstrap + self.network.relays:
            if not addr.startswith("/"):
                raise ConfigError(f"{where}: {addr!r} is not a multiaddr (like /ip4/127.0.0.1/tcp/4747)")
        try:
            check_poe_rule(self.learning.poe_rule, "learning.poe_rule")
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        for kind, addr in [("bootstrap", a) for a in self.network.bootstrap] + [
            ("relay", a) for a in self.network.relays
        ]:
            if "/p2p/" not in addr:
                raise ConfigError(f"{where}: {kind} {addr!r} lacks /p2p/<peer id> (ask its operator: ffnode id)")
        if not self.network.reachable and not self.network.relays:
            raise ConfigError(
                f"{where}: network.reachable is false but no network.relays: nobody could reach this node"
            )
        if self.network.max_peers <= 0:
            raise ConfigError(f"{where}: network.max_peers must be positive")
        shape = self.federation.image_shape
        if shape and not re.fullmatch(r"[1-9]\d*x[1-9]\d*x[1-9]\d*", shape):
            raise ConfigError(f"{where}: federation.image_shape {shape!r} is not HxWxC, like 28x28x3")
        if self.learning.deadline_s < 0 or self.learning.patience_s < 0:
            raise ConfigError(f"{where}: learning.deadline_s and learning.patience_s are seconds >= 0 (0: no limit)")
        p = self.privacy
        if not 0 < p.holdout_fraction < 0.5 or not 1 <= p.holdout_min <= p.holdout_max:
            raise ConfigError(
                f"{where}: privacy.holdout_fraction must be in (0, 0.5) and 1 <= holdout_min <= holdout_max"
            )
        if p.snapshots < 0 or p.audit_samples < 16 or p.mia_z < 0 or p.min_holdout < 2:
            raise ConfigError(f"{where}: privacy.snapshots >= 0, audit_samples >= 16, mia_z >= 0, min_holdout >= 2")
        if p.inconclusive not in ("use", "refuse"):
            raise ConfigError(f'{where}: privacy.inconclusive {p.inconclusive!r}: use "use" or "refuse"')
        for name in ("max_memorised", "max_dcr_close", "max_mia_auc", "max_mia_tpr_1pct"):
            if not 0 <= getattr(p, name) <= 1:
                raise ConfigError(f"{where}: privacy.{name} is a share: write a number from 0 to 1")
        if min(p.dp_epsilon, p.max_epsilon) < 0 or not 0 <= p.dp_delta < 1 or p.dp_max_grad_norm <= 0:
            raise ConfigError(
                f"{where}: privacy.dp_epsilon >= 0, max_epsilon >= 0, 0 <= dp_delta < 1 and dp_max_grad_norm > 0"
            )
        if p.max_epsilon and not p.require_audit:
            raise ConfigError(f"{where}: privacy.max_epsilon is judged with peers' audits: set require_audit = true")
        j = self.jobs
        if j.runner not in ("local", "ray"):
            raise ConfigError(f'{where}: jobs.runner {j.runner!r}: use "local" or "ray"')
        if j.workers < 0 or j.memory_mb < 256 or j.cpu_s < 1 or j.wall_s <= 0 or j.gpus < 0 or j.query_idle_s < 0:
            raise ConfigError(
                f"{where}: jobs: workers >= 0, memory_mb >= 256, cpu_s >= 1, wall_s > 0, gpus >= 0, query_idle_s >= 0"
            )
        a = self.api
        if a.listen and not re.fullmatch(r"\[?[0-9A-Za-z.:-]+\]?:\d{1,5}", a.listen):
            raise ConfigError(f'{where}: api.listen {a.listen!r} is not host:port, like "127.0.0.1:8470"')
        if min(a.max_body_mb, a.max_images, a.concurrency, a.max_connections, a.timeout_s) <= 0:
            raise ConfigError(
                f"{where}: api: max_body_mb, max_images, concurrency, max_connections and timeout_s must be positive"
            )
        for f in fields(LimitsConfig):
            if getattr(self.limits, f.name) <= 0:
                raise ConfigError(f"{where}: limits.{f.name} must be positive (delete the line for the default)")


TRUST_LISTS = {"block": "denied_publishers", "quarantine": "quarantined"}  # what an operator puts on which list


def edit_trust(home: Path, what: str, value: str, add: bool) -> Config:
    """Put `value` on (or take it off) the trust list `what` names (TRUST_LISTS) in the home's config.toml, and save
    it; ConfigError if it is taken off a list it is not on. The running node applies it on `reload_trust`."""
    with open(home / ".config.lock", "a") as lock:  # one edit at a time, from the CLI and the API alike
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _edit_trust(home, what, value, add)


def _edit_trust(home: Path, what: str, value: str, add: bool) -> Config:
    config = Config.load(home)
    field_name = TRUST_LISTS[what]
    items: list[str] = getattr(config.federation, field_name)
    if add and value not in items:
        items.append(value)
    elif not add:
        if value not in items:
            raise ConfigError(f"{value} is not in federation.{field_name} of {home / CONFIG_FILE}")
        items.remove(value)
    config.validate(home / CONFIG_FILE)
    config.save(home)
    return config


_SECTIONS: dict[str, type] = {
    "network": NetworkConfig,
    "federation": FederationConfig,
    "data": DataConfig,
    "learning": LearningConfig,
    "limits": LimitsConfig,
    "privacy": PrivacyConfig,
    "jobs": JobsConfig,
    "api": ApiConfig,
}


def _section(section_cls: type, raw: dict, where: str) -> object:
    known = {f.name: f for f in fields(section_cls)}
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    default = section_cls()
    for key, value in raw.items():
        expected = type(getattr(default, key))
        ok = isinstance(value, expected) or (expected is float and isinstance(value, int))
        if not ok or isinstance(value, bool) != (expected is bool):
            raise ConfigError(f"{where}: {key} should be a {expected.__name__}, got {value!r}")
        if expected is list and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {key} should be a list of strings")
    return section_cls(**raw)
