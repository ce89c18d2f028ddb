#!/usr/bin/env python3
"""A local FederatedFactory testnet: N real `ffnode` daemons on 127.0.0.1, end to end.

Partitions a dataset's training split over N sites (silo: one class per site), gives each site its own
data file and home, starts one `ffnode start` process per site with chained bootstrap addresses, shows
their progress live, waits until every node answers with a PoE over all experts, evaluates each node on
the held-out test split, runs the baselines on the same partition (server mode; centralised and
local-only with the experts' classifier; FedAvg, FedProx, FedDyn and SCAFFOLD at their tuned settings)
and writes a JSON report. With --unlearn K, node K then leaves the federation and the report gains an
`unlearning` section. Every process it starts is stopped on exit, whatever happens.

All sites share the machine's one pool of --workers job slots (`jobs.slots`): N sites cost N light nodes plus
at most --workers worker processes, and a site starts its query worker only when asked, stopping it once idle.
Their jobs are forked warm by one shared fork server (`jobs.forkserver`; --fresh-jobs: each a fresh process).
With --factory-cache DIR every site keeps its trained factories there (`jobs.factory_cache`), so a second run over the
same data, profile and seeds (a sweep over synthesis, expert or PoE settings) trains no factory again.
The report's `compute` gives each site's job CPU (core-seconds) per stage, `budget` what the profile states a
factory and an expert cost, and `memory` the peaks of resident memory over every daemon and its workers, sampled
each second through the run (scripts/harness/memory.py). With --whole-machine each job runs alone on every core,
so a federation of N sites on one machine measures what N such machines would get.

With --netns (root) every site gets its own network namespace and address on a virtual bridge
(scripts/harness/netns.py), links can be limited (--rate-mbit) and faults scheduled (--fault): sites then
talk over real interfaces, and the report gains a `network` section (wire bytes per site, time to a full
mesh, the faults and whether every site converged to the same artifacts and answers).

    python scripts/testnet.py --nodes 10 --dataset digits --partition silo --json runs/digits.json
    sudo .venv/bin/python scripts/testnet.py --netns --rate-mbit 10 --bootstrap chain --fault cut:3:60:60
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ffnode.artifacts.store import Store, atomic_write
from ffnode.config import Config
from ffnode.daemon import control
from ffnode.data.sources import default_classes, load_dataset, save_npz
from ffnode.expert.resnet import expert_from_weights
from ffnode.expert.train import train_expert
from ffnode.loaders import load_factory
from ffnode.poe import poe_predict
from ffnode.privacy.policy import AuditPolicy, audit_verdict
from ffnode.profiles import AUTO, Profile, ProfileError, choose_profile, expert_for, profile_for, with_factory_steps
from ffnode.synth import synthesize
from harness import partition
from harness.baselines import TUNED, run_federated, tuned
from harness.localnet import Daemons, forkserver, init_home, status
from harness.memory import MemorySampler
from harness.metrics import accuracy, macro_auroc
from harness.netns import Netns
from harness.report_chart import write_bytes_chart, write_chart

console = Console(stderr=True)
FETCH_LINE = re.compile(
    r"verified \w+ \w+ \((?P<size>\d+) bytes\) from \S+ in [\d.]+ s \((?P<rate>[\d.]+) MB/s, (?P<path>\w+)\)"
)


BASELINES = ("server", "centralised", "local", "fl")  # server mode, pooled data, each site alone, FedAvg...
# A site's query worker stops after this long unasked, so N sites do not keep N of them (~240 MB each on digits):
# evaluate() asks each site all its questions in a row, W sites at a time, and a worker answers a site's questions
# in a second or two, so at 5 s idle 8 of 10 sites still held theirs at once; at 1 s about W more linger.
QUERY_IDLE_S = 1.0


def baseline_set(text: str) -> frozenset[str]:
    chosen = frozenset(filter(None, text.split(",")))
    if unknown := chosen - set(BASELINES):
        raise argparse.ArgumentTypeError(f"unknown baseline(s) {', '.join(sorted(unknown))}: use {','.join(BASELINES)}")
    return chosen


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nodes", type=int, default=10, help="number of sites (silo: = number of classes)")
    p.add_argument("--dataset", default="digits", help="digits | bloodmnist | retinamnist | cifar10 | PATH")
    p.add_argument("--partition", default="silo", help="silo | dirichlet:ALPHA")
    p.add_argument(
        "--profile", default=AUTO, help="learning profile (ffnode/profiles.py); auto: the one sized for the data"
    )
    p.add_argument("--force-profile", action="store_true", help="keep a named profile sized for other images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=Path("runs/testnet"), help="homes and logs (wiped first)")
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    p.add_argument(
        "--base-port",
        type=int,
        default=27400,  # below Linux's ephemeral range (32768-60999): a node's outgoing connection cannot take one
        help="site i listens on this port + i",
    )
    p.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    p.add_argument("--unlearn", type=int, default=None, metavar="K", help="node K leaves after convergence")
    p.add_argument("--fl-rounds", type=int, default=None, help="weight-averaging baselines' rounds (default: tuned)")
    p.add_argument("--fl-local-epochs", type=int, default=None, help="their local epochs (default: tuned)")
    p.add_argument("--fl-lr", type=float, default=None, help="their lr (default: tuned; one tuned to it is skipped)")
    p.add_argument(
        "--baselines",
        type=baseline_set,
        default=frozenset(BASELINES),
        help=f"which baselines to run, comma-separated among {','.join(BASELINES)} (default: all)",
    )
    p.add_argument("--no-baselines", action="store_const", const=frozenset(), dest="baselines", help="run none")
    p.add_argument("--threads", type=int, default=None, help="torch threads per job and query worker (default: 1)")
    p.add_argument(
        "--evaluate",
        type=int,
        default=0,
        metavar="K",
        help="ask K sites spread over the federation, not all (0: all); converged sites hold the same experts",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="job processes at once over all sites (their shared jobs.slots), and queries at once (default: cores)",
    )
    p.add_argument(
        "--whole-machine",
        action="store_true",
        help="one job at a time with every core (--workers 1 --threads CORES): each site's training gets the whole "
        "machine in turn, so N sites here measure what N such machines would get (wall time is then the sum)",
    )
    p.add_argument(
        "--fresh-jobs",
        action="store_true",
        help="start each job as a fresh process, importing torch (default: forked warm by one shared fork server)",
    )
    p.add_argument("--max-per-class", type=int, default=0, help="keep at most N training images per class (0: all)")
    p.add_argument("--synth-per-class", type=int, default=0, help="synthetic images per missing class (0: profile's)")
    p.add_argument("--factory-steps", type=int, default=0, help="factory training steps (0: the profile's)")
    p.add_argument(
        "--factory-cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="every site's jobs.factory_cache: runs that name the same DIR train each factory once (kept, not wiped)",
    )
    p.add_argument("--netns", action="store_true", help="one network namespace per site on a bridge (root)")
    p.add_argument("--rate-mbit", type=float, default=None, help="with --netns: limit each link to this, each way")
    p.add_argument("--relay", action="store_true", help="with --netns: node 0 relays for the --nat sites")
    p.add_argument("--no-hole-punch", action="store_true", help="sites keep relayed connections (no DCUtR)")
    p.add_argument(
        "--nat",
        type=lambda v: frozenset(int(x) for x in v.split(",")),
        default=frozenset(),
        help="with --netns --relay: these sites accept no inbound connection (K,K,...); they bootstrap to node 0",
    )
    p.add_argument(
        "--bootstrap", choices=["hub+chain", "chain"], default="hub+chain", help="node i knows nodes 0 and i-1, or i-1"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        type=config_override,
        metavar="K:SECTION.KEY=VALUE",
        help="set a config value at site K (or 'all'), e.g. 4:learning.factory_steps=1600 or all:privacy.audit=false",
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        type=Fault.parse,
        help="cut:K:AT:FOR (with --netns: site K offline from AT s for FOR s), kill:K:AT (for good), restart:K:AT",
    )
    args = p.parse_args(argv)
    if args.whole_machine and (args.workers, args.threads) != (None, None):
        p.error("--whole-machine sets --workers 1 and --threads to the cores: give neither with it")
    if min(args.workers or 1, args.threads or 1) < 1:
        p.error("--workers and --threads must be at least 1")
    cores = os.cpu_count() or 1
    args.workers, args.threads = (1, cores) if args.whole_machine else (args.workers or cores, args.threads or 1)
    if args.evaluate < 0:
        p.error("--evaluate takes 0 (every site) or a number of sites to ask")
    if any(f.kind == "cut" for f in args.fault) and not args.netns:
        p.error("--fault cut needs --netns (a link to cut)")
    if args.nat and not (args.netns and args.relay) or 0 in args.nat:
        p.error("--nat needs --netns and --relay, and node 0 (the relay) cannot be behind NAT")
    if args.unlearn is not None and args.fault:
        p.error("--unlearn and --fault do not combine")
    return args


@dataclasses.dataclass
class Fault:
    kind: str  # cut | kill | restart
    node: int
    at: float  # seconds after the daemons were started
    length: float = 0.0  # cut: how long the link stays down
    done_at: float | None = None

    @staticmethod
    def parse(spec: str) -> Fault:
        kind, *rest = spec.split(":")
        want = {"cut": 3, "kill": 2, "restart": 2}
        if kind not in want or len(rest) != want[kind]:
            raise argparse.ArgumentTypeError(f"{spec!r}: expected cut:K:AT:FOR, kill:K:AT or restart:K:AT")
        try:
            return Fault(kind, int(rest[0]), *(float(x) for x in rest[1:]))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{spec!r}: K must be an integer, AT and FOR seconds") from None


# -- the federation --------------------------------------------------------------------------------
def split_data(args: argparse.Namespace, classes: list[str]) -> tuple[list[np.ndarray], Any, Any]:
    train = load_dataset(args.dataset, split="train", classes=classes)
    test = load_dataset(args.dataset, split="test", classes=classes)
    if args.max_per_class:  # a seeded subsample of each class, for a quicker run on a big dataset
        rng = np.random.default_rng(args.seed)
        keep = np.sort(
            np.concatenate(
                [rng.permutation(np.flatnonzero(train.labels == c))[: args.max_per_class] for c in range(len(classes))]
            )
        )
        train = dataclasses.replace(train, images=train.images[keep], labels=train.labels[keep])
    try:
        parts = partition.by_spec(train.labels, args.nodes, args.partition, args.seed)
    except ValueError as e:
        raise SystemExit(f"error: --partition: {e}") from None
    return parts, train, test


def pick_profile(args: argparse.Namespace, parts: list[np.ndarray], train: Any, classes: list[str]) -> str:
    """The federation's one profile, by the rule `ffnode init` applies (ffnode.profiles.choose_profile): with
    `auto`, the one sized for the images and for every site's expert set; a named one must fit (or be forced)."""
    sites = [(len(idx), len(classes) - len(set(train.labels[idx].tolist()))) for idx in parts]
    try:
        chosen, said = choose_profile(
            args.profile, train.image_shape, sites, force=args.force_profile, synth=args.synth_per_class
        )
    except ProfileError as e:
        raise SystemExit(f"error: --dataset {args.dataset}: {e}") from None
    if said:
        console.print(said, markup=False, highlight=False, soft_wrap=True)
    return chosen


def forkserver_folder(args: argparse.Namespace) -> Path:
    return (args.workdir / "forkserver").resolve()


def make_homes(
    args: argparse.Namespace, parts: list[np.ndarray], train: Any, classes: list[str], net: Netns | None
) -> list[Path]:
    """One home per node; node i bootstraps to node 0 and node i-1 (a chain plus a hub), or to i-1 only. Every
    site runs its jobs in the run's one pool of --workers slots, and its query worker only while it is asked."""
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    pool = {"slots": str((args.workdir / "slots").resolve()), "workers": args.workers}
    pool |= {} if args.fresh_jobs else {"forkserver": str(forkserver_folder(args) / "jobs.sock")}
    pool |= {"factory_cache": str(args.factory_cache.resolve())} if args.factory_cache else {}
    settings = {"jobs": pool | {"query_warm": False, "query_idle_s": QUERY_IDLE_S}}
    # every site on 127.0.0.1 is one IP to the others: room for a connection to and from each of them
    settings["limits"] = {"connections_per_ip": max(64, 2 * len(parts))}
    homes, addrs = [], []
    for i, idx in enumerate(parts):
        data = args.workdir / f"node{i}.npz"
        save_npz(data, {"train": (train.images[idx], train.labels[idx])}, classes)
        home = args.workdir / f"node{i}"
        boot = (sorted({addrs[0], addrs[-1]}) if args.bootstrap == "hub+chain" else addrs[-1:]) if addrs else []
        extra = ["--relay-service"] if args.relay and i == 0 else []
        if i in args.nat:  # reachable only through node 0's relay
            boot, extra = addrs[:1], ["--relay", addrs[0], "--unreachable"]
        addrs.append(
            init_home(
                home,
                port=args.base_port + i,
                data=data,
                classes=classes,
                bootstrap=boot,
                profile=args.profile,
                force_profile=args.force_profile,
                seed=args.seed + i,
                threads=args.threads,
                host=net.ip(i) if net else "127.0.0.1",
                extra=extra,
                settings=settings,
            )
        )
        if args.synth_per_class or args.factory_steps or args.no_hole_punch or args.set:
            config = Config.load(home)
            config.learning.synth_per_class = args.synth_per_class
            config.learning.factory_steps = args.factory_steps
            config.network.hole_punch = not args.no_hole_punch
            for site, section, key, value in args.set:
                if site in ("all", str(i)):
                    setattr(getattr(config, section), key, value)
            config.validate(home)
            config.save(home)
        homes.append(home)
    return homes


def config_override(text: str) -> tuple[str, str, str, Any]:
    """K:SECTION.KEY=VALUE -> (site, section, key, value), the value parsed as TOML (true, 1600, 0.5, "x")."""
    import tomllib

    try:
        site, rest = text.split(":", 1)
        path, raw = rest.split("=", 1)
        section, key = path.split(".", 1)
        value = tomllib.loads(f"v = {raw}")["v"]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not K:SECTION.KEY=VALUE") from None
    if not hasattr(Config(), section) or not hasattr(getattr(Config(), section), key):
        raise argparse.ArgumentTypeError(f"{section}.{key} is not a config key (ffnode/config.py)")
    return site, section, key, value


def statuses(homes: list[Path], daemons: Daemons) -> list[dict | None]:
    return [status(h) if daemons.running(h) else None for h in homes]


def render(title: str, homes: list[Path], st: list[dict | None], t0: float) -> Table:
    t = Table(title=f"{title}  ({time.time() - t0:.0f} s)", title_justify="left")
    for c in ("node", "classes", "peers", "phase", "task", "progress", "factories", "experts"):
        t.add_column(c)
    for i, s in enumerate(st):
        if s is None:
            t.add_row(str(i), "", "", "starting" if homes[i] else "stopped", "", "", "", "")
            continue
        done, total = s["progress"]
        a = s["artifacts"]
        t.add_row(
            str(i),
            ",".join(s["local_classes"])[:20],
            str(s["connected_peers"]),
            s["phase"],
            s["task"][:30],
            f"{done}/{total}" if total else "",
            str(a.get("factory_live", 0)),
            str(a.get("expert_live", 0)),
        )
    return t


def wait_until(
    title: str,
    homes: list[Path],
    daemons: Daemons,
    done: Callable[[list[dict | None]], bool],
    deadline: float,
    due: Callable[[], None] = lambda: None,
) -> list[dict]:
    """Show progress until `done`; `due` runs once a second first (scheduled faults)."""
    t0 = time.time()
    with Live(console=console, refresh_per_second=2, transient=False) as live:
        while True:
            due()
            daemons.check()
            st = statuses(homes, daemons)
            live.update(render(title, homes, st, t0))
            if done(st):
                return st  # type: ignore[return-value]
            if time.time() > deadline:
                raise TimeoutError(f"{title}: not done before --timeout")
            time.sleep(1.0)


def asked(running: list[int], k: int) -> list[int]:
    """The sites evaluate() asks: all, or `k` spread evenly from the first running site to the last.

    Converged sites hold the same live artifacts (Network.converged checks it), and a PoE is a pure function of
    its experts and the input, so at 64 sites asking 8 measures what asking all would; the report's
    `identical_answers` checks that among the sites asked.
    """
    if not k or k >= len(running):
        return running
    return [running[round(j * (len(running) - 1) / max(1, k - 1))] for j in range(k)]


def query(home: Path, images: np.ndarray, rule: str | None = None) -> dict:
    args = control.encode_images(images) | ({"rule": rule} if rule else {})
    return control.call(home, "query", args, timeout=600)


def evaluate(
    homes: list[Path], test: Any, live: list[int], at_once: int, rules: tuple[str | None, ...] = (None,)
) -> list[dict[int, dict]]:
    """Each live site's PoE on the test split by each of `rules` (None: the site's configured rule), one result
    per rule.

    A site answers in its query worker, started at its first query and stopped once idle: asking `at_once`
    sites at a time (--workers) keeps the workers answering to one per core, and each site is asked every
    rule in a row, so its worker loads the experts once.
    """

    def ask(i: int) -> list[dict]:
        return [query(homes[i], test.images, rule) for rule in rules]

    with ThreadPoolExecutor(max_workers=max(1, min(len(live), at_once))) as pool:
        answers = dict(zip(live, pool.map(ask, live), strict=True))
    results: list[dict[int, dict]] = [{} for _ in rules]
    for i, per_rule in answers.items():
        for result, r in zip(results, per_rule, strict=True):
            probs = np.asarray(r["probabilities"])
            preds = np.asarray(r["labels"])
            result[i] = {
                "accuracy": accuracy(preds, test.labels),
                "auroc": macro_auroc(probs, test.labels),
                "experts": len(r["experts"]),
                "rule": r["rule"],
                "preds": preds,
            }
    return results


def poe_figures(results: dict[int, dict]) -> dict[str, dict]:
    """Accuracy and macro AUROC over the sites: mean, min and per site, in site order."""
    out = {}
    for key in ("accuracy", "auroc"):
        values = [results[i][key] for i in sorted(results)]
        out[key] = {"mean": float(np.mean(values)), "min": float(np.min(values)), "per_node": values}
    return out


# -- baselines (in-process, same partition) -----------------------------------------------------------


def fit_eval(x: np.ndarray, y: np.ndarray, test: Any, n_classes: int, profile: Profile, seed: int) -> dict[str, float]:
    """Train the expert's classifier on (x, y) for the epochs a site's expert would get over as many images, and
    evaluate it alone on the test split."""
    cfg = expert_for(profile, len(y))
    weights, _ = train_expert(x, y, n_classes, cfg, seed=seed)
    model = expert_from_weights(weights, cfg, n_classes, test.images.shape[1:])
    preds, probs = poe_predict([model], test.images)
    return {"accuracy": accuracy(preds, test.labels), "auroc": macro_auroc(probs, test.labels)}


def baselines(args: argparse.Namespace, parts: list[np.ndarray], train: Any, test: Any, n_classes: int) -> dict:
    """The chosen baselines (args.baselines, less server mode) on the federation's own split."""
    profile = profile_for(args.profile, train.images.shape[1:])
    cfg = profile.expert
    out: dict[str, Any] = {}
    if "centralised" in args.baselines:
        console.print("baselines: centralised (all real training data) ...")
        out["centralized"] = fit_eval(train.images, train.labels, test, n_classes, profile, args.seed)
    if "local" in args.baselines:
        console.print("baselines: local only (each site alone) ...")
        local = [
            fit_eval(train.images[idx], train.labels[idx], test, n_classes, profile, args.seed)["accuracy"]
            for idx in parts
        ]
        out["local_only"] = {"accuracy_mean": float(np.mean(local)), "per_node": local}
    if "fl" in args.baselines:
        clients = [(train.images[idx], train.labels[idx]) for idx in parts]
        for strategy, settings in tuned():
            overrides = {"rounds": args.fl_rounds, "local_epochs": args.fl_local_epochs, "lr": args.fl_lr}
            if args.fl_lr is not None and settings.lr == args.fl_lr:
                console.print(f"baselines: {strategy.name} skipped: its tuned lr is already {args.fl_lr:g}")
                continue
            settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
            console.print(f"baselines: {strategy.name} ({settings.label()}) ...")
            r = run_federated(strategy, clients, (test.images, test.labels), n_classes, cfg, settings, seed=args.seed)
            out[strategy.name] = r | {"param": TUNED[strategy.name][0]}
    return out


def server_mode(args: argparse.Namespace, home: Path, test: Any, n_classes: int) -> dict:
    """The paper's centralised protocol: one classifier trained only on synthetic data from every factory."""
    store = Store(home / "store", federation="testnet")
    factories = []
    for m in store.live("factory"):
        cfg, weights = load_factory(store, m)
        factories.append((m.classes[0], weights, cfg))
    profile = profile_for(args.profile, test.images.shape[1:])
    t0 = time.perf_counter()
    x, y = synthesize(factories, synth_per_class(args, test.images.shape[1:]), seed=args.seed)
    synth_s = time.perf_counter() - t0
    result = fit_eval(x, y, test, n_classes, profile, args.seed)
    return {**result, "synthetic_images": len(y), "synthesis_img_per_s": round(len(y) / synth_s, 1)}


def synth_per_class(args: argparse.Namespace, image_shape: tuple[int, int, int]) -> int:
    """Synthetic images per missing class, as the daemons use it: --synth-per-class, else the profile's."""
    return args.synth_per_class or profile_for(args.profile, image_shape).synth_per_class


def site_budget(args: argparse.Namespace, image_shape: tuple[int, int, int]) -> dict[str, Any]:
    """What the profile, with --factory-steps, states one factory and one expert cost a site."""
    return with_factory_steps(profile_for(args.profile, image_shape), args.factory_steps).budget()


def compute_per_site(st: list[dict | None], sites: list[int]) -> dict[str, Any]:
    """The CPU its jobs used (core-seconds per stage: startup, factories, audit, synthesis, expert ...) at each
    site, as the site's status counts it since it started (a restarted site's count begins again), and in all."""
    per_site = [st[i]["compute"] if i in sites and st[i] else None for i in range(len(st))]
    total = phase_sum(per_site)
    answered = [c for c in per_site if c]
    return {
        "core_s": total,
        "core_s_total": round(sum(total.values()), 1),
        "per_site_core_s": per_site,
        "site_core_s_max": {k: round(max(c.get(k, 0.0) for c in answered), 1) for k in total},  # the dearest site
        "jobs": {k: sum(s["jobs"][k] for s in st if s) for k in ("ok", "failed", "killed")},
    }


def phase_sum(per_site: list[dict[str, float] | None]) -> dict[str, float]:
    """Core-seconds per stage summed over the sites (None: a site that did not answer)."""
    total: dict[str, float] = {}
    for c in filter(None, per_site):
        for phase, seconds in c.items():
            total[phase] = total.get(phase, 0.0) + seconds
    return {k: round(v, 1) for k, v in total.items()}


def compute_used(home: Path) -> dict:
    """Compute figures from the signed manifests' training summaries (every node holds all of them)."""
    rows = [r for r in control.call(home, "artifacts") if r["state"] == "live"]
    fac = [r["meta"] for r in rows if r["kind"] == "factory"]
    exp = [r["meta"] for r in rows if r["kind"] == "expert"]

    def mean(items: list[dict], key: str) -> float | None:
        values = [m[key] for m in items if key in m]
        return round(float(np.mean(values)), 2) if values else None

    return {
        "factories": len(fac),
        "factory_train_seconds_mean": mean(fac, "seconds"),
        "factory_images_seen_mean": mean(fac, "images_seen"),
        "expert_train_seconds_mean": mean(exp, "seconds"),
        "synthesis_img_per_s_per_node": round(
            sum(m.get("synth_sampled", 0) for m in exp) / max(1e-9, sum(m.get("synth_seconds", 0.0) for m in exp)), 1
        ),
        "expert_train_images_mean": mean(exp, "n_train"),
    }


AUDIT_KEYS = ("step", "n_train", "n_holdout", "memorised", "dcr_close", "dcr_ratio", "mia_auc", "mia_tpr_1pct",
              "mia_tpr_01pct", "seconds")  # fmt: skip


def privacy_audits(home: Path, final: list[dict | None]) -> dict:
    """The privacy audit of every factory, as signed in its manifest, and the factories their sites withheld."""
    rows = [r for r in control.call(home, "artifacts") if r["kind"] == "factory"]
    policy = AuditPolicy.of(Config.load(home).privacy)  # every site's thresholds are the same here
    audited = [
        {"class": r["classes"][0], "owner": r["owner"], "state": r["state"], **{k: a[k] for k in AUDIT_KEYS}}
        | audit_verdict(r["meta"], policy)  # passes, inconclusive or fails, and the attack's power
        for r in rows
        if isinstance(a := r["meta"].get("audit"), dict)
    ]
    withheld = {s["peer_id"]: s["withheld_factories"] for s in final if s and s.get("withheld_factories")}

    def worst(key: str) -> float | None:
        return max((a[key] for a in audited), default=None)

    return {
        "factories": audited,
        "unaudited": len(rows) - len(audited),
        "refused": sum(r["state"] == "refused" for r in rows),
        "withheld": withheld,
        "verdicts": {v: sum(a["verdict"] == v for a in audited) for v in ("passes", "inconclusive", "fails")},
        "memorised_max": worst("memorised"),
        "dcr_close_max": worst("dcr_close"),
        "mia_auc_max": worst("mia_auc"),
        "mia_auc_mean": round(float(np.mean([a["mia_auc"] for a in audited])), 4) if audited else None,
        "audit_seconds_mean": round(float(np.mean([a["seconds"] for a in audited])), 2) if audited else None,
    }


def hardware() -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


# -- unlearning ------------------------------------------------------------------------------------
def unlearn(
    args: argparse.Namespace,
    homes: list[Path],
    daemons: Daemons,
    test: Any,
    parts: list[np.ndarray],
    train: Any,
    before: dict[int, dict],
    deadline: float,
) -> dict:
    k = args.unlearn
    only_k = sorted(
        set(np.unique(train.labels[parts[k]]).tolist())
        - {int(c) for j, idx in enumerate(parts) if j != k for c in np.unique(train.labels[idx])}
    )
    mask = np.isin(test.labels, only_k)
    others = [i for i in range(len(homes)) if i != k]
    live_before = {r["id"] for r in control.call(homes[others[0]], "artifacts") if r["state"] == "live"}
    k_id = control.call(homes[k], "status")["peer_id"]
    blobs = {r["blob"] for r in control.call(homes[k], "artifacts") if r["owner"] == k_id and r["blob"]}
    spent_before = phase_sum([s["compute"] if s else None for s in statuses(homes, daemons)])
    left = control.call(homes[k], "leave")
    revoked = set(left["ids"])
    t0 = time.time()

    def converged(st: list[dict | None]) -> bool:
        if any(st[i] is None or st[i]["phase"] != "ready" for i in others):
            return False
        for i in others:
            rows = control.call(homes[i], "artifacts")
            if any(r["id"] in revoked and r["state"] != "revoked" for r in rows):
                return False
            live_experts = [r for r in rows if r["kind"] == "expert" and r["state"] == "live"]
            if any(revoked & set(r["lineage"]) for r in live_experts) or len(live_experts) != len(others):
                return False
        return True

    st = wait_until(f"node {k} leaves", homes, daemons, converged, deadline)
    spent = phase_sum([s["compute"] if s else None for s in st])
    seconds = time.time() - t0
    proofs = [control.call(homes[i], "verify_unlearning", timeout=None) for i in others]
    retrained = len(
        {  # experts live before the withdrawal that their owners have since superseded
            r["id"]
            for i in others
            for r in control.call(homes[i], "artifacts")
            if r["id"] in live_before and r["state"] == "revoked" and (r["reason"] or "").startswith("superseded")
        }
    )
    (after,) = evaluate(homes, test, asked(others, args.evaluate), args.workers)
    held = [i for i in others for b in blobs if (homes[i] / "store" / "blobs" / b).exists()]
    not_tombstoned = [
        i for i in others for r in control.call(homes[i], "artifacts") if r["id"] in revoked and r["state"] != "revoked"
    ]
    return {
        "node": k,
        "revoked": sorted(revoked),
        "dropped_everywhere": not held and not not_tombstoned and all(p["live_lineage_clean"] for p in proofs),
        "experts_retrained": retrained,
        "exact": all(p["bitwise_identical"] for p in proofs),
        "classes": only_k,
        "class_accuracy_before": class_accuracy(before, sorted(set(before) & set(after)), mask, test.labels),
        "class_accuracy_after": class_accuracy(after, sorted(set(before) & set(after)), mask, test.labels),
        "seconds_to_converge": round(seconds, 1),
        "compute_core_s": {k: round(v - spent_before.get(k, 0.0), 1) for k, v in spent.items()},  # the retraining
    }


def class_accuracy(results: dict[int, dict], nodes: list[int], mask: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean PoE accuracy over `nodes` on the test images selected by `mask` (None if it selects none)."""
    if not mask.any():
        return None
    return float(np.mean([accuracy(results[i]["preds"][mask], labels[mask]) for i in nodes]))


class Network:
    """Runs the scheduled faults when their time comes and records what the run saw of the network: when the
    mesh became full, what each fault did, the bytes on each site's wire (with --netns)."""

    def __init__(self, args: argparse.Namespace, homes: list[Path], daemons: Daemons, net: Netns | None) -> None:
        self.args, self.homes, self.daemons, self.net = args, homes, daemons, net
        self.t0 = time.time()
        self.full_mesh_s: float | None = None
        self.gone: set[int] = set()  # killed for good

    def running(self) -> list[int]:
        return [i for i in range(len(self.homes)) if i not in self.gone]

    def due(self) -> None:
        now = time.time() - self.t0
        for f in self.args.fault:
            home = self.homes[f.node]
            if f.done_at is None and now >= f.at:
                f.done_at = round(now, 1)
                console.print(f"fault at {now:.0f} s: {f.kind} node {f.node}")
                if f.kind == "cut":
                    assert self.net is not None
                    self.net.cut(f.node)
                elif f.kind == "kill":
                    self.daemons.kill(home)
                    self.gone.add(f.node)
                else:  # restart: SIGKILL, mid-transfer or mid-training, then start again at once
                    self.daemons.kill(home)
                    self.daemons.start(home)
            if f.kind == "cut" and f.done_at is not None and f.length and now >= f.at + f.length:
                assert self.net is not None
                self.net.restore(f.node)
                console.print(f"{now:.0f} s: node {f.node}'s link restored")
                f.length = -f.length  # restored: never again (the report shows the length as given)

    def converged(self, st: list[dict | None]) -> bool:
        """Every running site ready, holding an expert of each running site, and all hold the same live artifacts."""
        running = self.running()
        if self.full_mesh_s is None and all(st[i] and st[i]["connected_peers"] >= len(running) - 1 for i in running):
            self.full_mesh_s = round(time.time() - self.t0, 1)
        if any(f.done_at is None or f.length > 0 for f in self.args.fault):
            return False  # a fault still to come, or a link still cut
        for i in running:
            s = st[i]
            if s is None or s["phase"] != "ready" or s["artifacts"].get("expert_live", 0) < len(running):
                return False
            if any(k.endswith("_pending") and v for k, v in s["artifacts"].items()):
                return False
        live = [{r["id"] for r in control.call(self.homes[i], "artifacts") if r["state"] == "live"} for i in running]
        return all(x == live[0] for x in live)

    def report(self, results: dict[int, dict]) -> dict[str, Any]:
        first = results[self.running()[0]]["preds"]
        return {
            "netns": self.net is not None,
            "rate_mbit": self.args.rate_mbit,
            "bootstrap": self.args.bootstrap,
            "full_mesh_s": self.full_mesh_s,
            "faults": [
                {"kind": f.kind, "node": f.node, "at_s": f.at, "for_s": abs(f.length) or None, "done_at_s": f.done_at}
                for f in self.args.fault
            ],
            "identical_answers": all(np.array_equal(r["preds"], first) for r in results.values()),
            "wire_bytes_per_node": [self.net.wire_bytes(i) for i in range(len(self.homes))] if self.net else None,
            "nat": {str(i): self.nat_report(i) for i in sorted(self.args.nat)},
        }

    def nat_report(self, i: int) -> dict[str, Any]:
        """How a site behind NAT got its blobs (each fetch's path and rate, from its log) and how it is connected."""
        fetches = [m.groupdict() for m in FETCH_LINE.finditer((self.homes[i] / "node.log").read_text())]
        by_path: dict[str, list[float]] = {}
        for f in fetches:
            by_path.setdefault(f["path"], []).append(float(f["rate"]))
        paths = [p["path"] for p in control.call(self.homes[i], "peers") if p["connected"]]
        return {
            "fetches": {k: {"count": len(v), "mb_per_s_mean": round(float(np.mean(v)), 2)} for k, v in by_path.items()},
            "connections": {k: paths.count(k) for k in sorted(set(paths), key=str)},
        }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    classes = list(default_classes(args.dataset))
    if args.partition == "silo" and args.nodes < len(classes):
        raise SystemExit(f"error: silo needs --nodes >= {len(classes)} (one class per site) for {args.dataset}")
    parts, train, test = split_data(args, classes)
    args.profile = pick_profile(args, parts, train, classes)
    net = Netns(len(parts), rate_mbit=args.rate_mbit, no_inbound=args.nat) if args.netns else None
    daemons, jobs = Daemons(), contextlib.ExitStack()
    shared: list[int] = []  # the fork server: its children are the sites' jobs
    memory = MemorySampler(daemons.pids, shared=lambda: shared)  # every daemon and job, once a second, until the end
    try:
        memory.start()
        homes = make_homes(args, parts, train, classes, net)
        if not args.fresh_jobs:
            shared.append(jobs.enter_context(forkserver(forkserver_folder(args))).pid)
        deadline = time.time() + args.timeout
        for i, home in enumerate(homes):
            daemons.start(home, net.exec_prefix(i) if net else None)
        network = Network(args, homes, daemons, net)
        n = len(homes)
        wait_until(
            f"testnet: {n} nodes, {args.dataset}, {args.partition}" + (" (netns)" if net else ""),
            homes,
            daemons,
            network.converged,
            deadline,
            network.due,
        )
        wall = time.time() - network.t0
        running = network.running()
        results, by_product = evaluate(homes, test, asked(running, args.evaluate), args.workers, (None, "product"))
        poe, product = poe_figures(results), poe_figures(by_product)
        final = statuses(homes, daemons)
        report: dict[str, Any] = {
            "dataset": args.dataset,
            "nodes": n,
            "partition": args.partition,
            "profile": args.profile,
            "seed": args.seed,  # nodes get seed + i: another seed, another draw of factories
            "train_images": len(train.labels),
            "synth_per_class": synth_per_class(args, train.images.shape[1:]),
            "wall_s": round(wall, 1),
            "evaluated_sites": sorted(results),  # --evaluate: the sites asked
            "poe_rule": "/".join(sorted({r["rule"] for r in results.values()})),  # one rule unless a site fell back
            "poe_accuracy": poe["accuracy"],
            "poe_auroc": poe["auroc"],
            "poe_product": product,  # the paper's rule on the same experts (ffnode/poe.py)
            "bytes_sent_per_node": [s["bytes_sent"] if s else None for s in final],
            "network": network.report(results),
            "workers": args.workers,
            "threads": args.threads,
            # each training job alone on every core: the per-site figures are what one such machine a site gets
            "machine_per_site": args.whole_machine,
            # what the profile states one factory and one expert cost (images seen; core-seconds where measured)
            "budget": site_budget(args, train.images.shape[1:]),
            "factory_cache": str(args.factory_cache) if args.factory_cache else None,  # factories trained before: 0 s
            # the manifests' training summaries (results_table.py reads them), and the jobs' CPU per site and stage
            "compute": compute_used(homes[running[0]]) | compute_per_site(final, running),
            "privacy": privacy_audits(homes[running[0]], final),
            "hardware": hardware(),
        }
        if "server" in args.baselines:  # before any site leaves: it uses every factory of the federation
            console.print("server mode: one classifier on synthetic data from every factory ...")
            report["server_mode"] = server_mode(args, homes[running[0]], test, len(classes))
        if args.unlearn is not None:
            report["unlearning"] = unlearn(args, homes, daemons, test, parts, train, results, deadline)
    finally:
        memory.stop()
        daemons.stop_all()
        jobs.close()
        if net is not None:
            net.close()
    report["memory"] = memory.report()
    if args.baselines - {"server"}:
        write_report(args, report)  # the federation's figures are safe if the long baselines are interrupted
        report["baselines"] = baselines(args, parts, train, test, len(classes))
    print_report(report)
    write_report(args, report)
    if args.json and args.baselines:
        chart = args.json.with_suffix(".png")
        write_chart(report, chart, num_classes=len(classes))
        console.print(f"chart written to {chart}")
        if "fedavg" in report.get("baselines", {}):
            write_bytes_chart(report, bytes_chart := chart.with_name(f"{chart.stem}-bytes.png"))
            console.print(f"chart written to {bytes_chart}")
    return report


def write_report(args: argparse.Namespace, report: dict) -> None:
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.json, json.dumps(report, indent=2).encode())  # never a half-written report
        console.print(f"report written to {args.json}")


def print_report(r: dict) -> None:
    t = Table(
        title=f"{r['dataset']}: {r['nodes']} nodes, {r['partition']}, profile {r['profile']}", title_justify="left"
    )
    t.add_column("metric")
    t.add_column("value")
    t.add_row("wall time (federation)", f"{r['wall_s']:.0f} s")
    t.add_row("PoE accuracy mean / min", f"{r['poe_accuracy']['mean']:.4f} / {r['poe_accuracy']['min']:.4f}")
    t.add_row("PoE macro AUROC mean", f"{r['poe_auroc']['mean']:.4f}")
    t.add_row("PoE rule", r["poe_rule"])
    t.add_row(
        "paper's product rule: accuracy / AUROC mean",
        "{accuracy[mean]:.4f} / {auroc[mean]:.4f}".format(**r["poe_product"]),
    )
    if "server_mode" in r:
        t.add_row("server mode accuracy (synthetic only)", f"{r['server_mode']['accuracy']:.4f}")
    b = r.get("baselines", {})
    for name in TUNED:
        if name in b:
            t.add_row(
                f"{name} accuracy final / best round ({b[name]['rounds']} rounds)",
                f"{b[name]['accuracy']:.4f} / {b[name]['best_accuracy']:.4f} (round {b[name]['best_round']})",
            )
    if "centralized" in b:
        t.add_row("centralised accuracy", f"{b['centralized']['accuracy']:.4f}")
    if "local_only" in b:
        t.add_row("local-only accuracy (mean)", f"{b['local_only']['accuracy_mean']:.4f}")
    p = r.get("privacy")
    if p and p["factories"]:
        t.add_row("privacy audit: memorised / DCR close max", f"{p['memorised_max']:.1%} / {p['dcr_close_max']:.1%}")
        t.add_row("privacy audit: MIA AUC mean / max", f"{p['mia_auc_mean']:.3f} / {p['mia_auc_max']:.3f}")
        t.add_row("privacy audit: seconds per factory (mean)", f"{p['audit_seconds_mean']:.1f}")
        powers = [a["power"] for a in p["factories"]]
        t.add_row(
            "privacy audit: passes / inconclusive / fails (power min-max)",
            "{passes} / {inconclusive} / {fails}".format(**p["verdicts"]) + f" ({min(powers):.2f}-{max(powers):.2f})",
        )
    if p and (p["withheld"] or p["refused"]):
        t.add_row("factories withheld / refused", f"{sum(map(len, p['withheld'].values()))} / {p['refused']}")
    c, m = r["compute"], r["memory"]
    stages = ", ".join(f"{k} {v:.0f}" for k, v in sorted(c["core_s"].items(), key=lambda kv: -kv[1]))
    t.add_row(f"job CPU, all sites ({r['workers']} workers)", f"{c['core_s_total']:.0f} core-s ({stages})")
    n = sum(1 for x in c["per_site_core_s"] if x)
    site = ", ".join(f"{k} {v / n:.0f} / {c['site_core_s_max'][k]:.0f}" for k, v in c["core_s"].items() if v >= 0.5)
    t.add_row("job CPU a site, mean / max", f"{site} core-s")
    b = r["budget"]
    cost = (
        "" if b["factory_core_s"] is None else f" (~{b['factory_core_s']:.0f} / {b['expert_core_s'] or 0:.0f} core-s)"
    )
    t.add_row("profile's budget: a factory / an expert", f"{b['factory_images']:,} / up to {b['expert_images']:,} "
              f"images seen{cost}")  # fmt: skip
    if r["machine_per_site"]:
        t.add_row("each job had", f"the whole machine ({r['threads']} cores), one at a time")
    t.add_row("jobs ok / failed / killed", "{ok} / {failed} / {killed}".format(**c["jobs"]))
    t.add_row(
        "memory peak (resident): largest node / all workers / all",
        f"{m['node_rss_mb_max']:.0f} / {m['workers_rss_mb_max']:.0f} / {m['total_rss_mb_max']:.0f} MB",
    )
    t.add_row("memory peak, all (shared pages counted once)", f"{m['total_pss_mb_max']:.0f} MB (PSS)")
    t.add_row("processes below the nodes at once, most", str(m["workers_max"]))  # jobs, queries, data readers
    sent = [b for b in r["bytes_sent_per_node"] if b is not None]
    t.add_row("bytes sent per node (mean)", f"{np.mean(sent) / 1e6:.2f} MB")
    net = r["network"]
    t.add_row("full mesh after", f"{net['full_mesh_s']} s")
    if net["wire_bytes_per_node"]:
        tx = [w["tx"] for w in net["wire_bytes_per_node"]]
        t.add_row("wire bytes sent per site mean / max", f"{np.mean(tx) / 1e6:.2f} / {max(tx) / 1e6:.2f} MB")
    for f in net["faults"]:
        t.add_row(
            f"fault: {f['kind']} node {f['node']}",
            f"at {f['done_at_s']} s" + (f" for {f['for_s']} s" if f["for_s"] else ""),
        )
    t.add_row("every site gives the same answers", str(net["identical_answers"]))
    for i, nat in net.get("nat", {}).items():
        fetched = ", ".join(f"{v['count']} {k} at {v['mb_per_s_mean']} MB/s" for k, v in nat["fetches"].items())
        t.add_row(f"site {i} behind NAT: fetches / connections", f"{fetched} / {nat['connections']}")
    if "unlearning" in r:
        u = r["unlearning"]
        t.add_row(f"unlearning: node {u['node']} left", f"{len(u['revoked'])} artifacts revoked")
        t.add_row("dropped everywhere / exact", f"{u['dropped_everywhere']} / {u['exact']}")
        t.add_row("experts retrained", str(u["experts_retrained"]))
        if u["class_accuracy_before"] is not None:
            t.add_row(
                "its classes' accuracy before -> after",
                f"{u['class_accuracy_before']:.3f} -> {u['class_accuracy_after']:.3f}",
            )
        t.add_row("seconds to converge", f"{u['seconds_to_converge']:.1f}")
        t.add_row("job CPU to converge", f"{sum(u['compute_core_s'].values()):.0f} core-s")
    Console().print(t)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # SIGTERM too runs main's `finally`: no daemon left
    main()
