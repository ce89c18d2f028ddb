#!/usr/bin/env python3
"""Local faults against a small federation of real daemons: kill -9 at random moments of every phase, damaged
store files and checkpoints, a full disk; afterwards every node must be up and converged.

Sites hold one digits class each (tiny profile by default, so a fault lands in every phase many times). For
--minutes, a fault is injected every --interval seconds on average, at a random site:

    kill      SIGKILL, then start again after 0-5 s (whatever the node was doing: training, fetching, serving)
    corrupt   SIGKILL, then flip a byte in (or empty) a random manifest, revocation, blob or factory checkpoint
              of that site, then start again: the node must quarantine it and fetch it again, or retrain
    disk      (with --disk, root: every home is on its own tmpfs of --disk-mb) take every free byte for 20 s
    retrain   not a fault but work for the next ones to land in: the site revokes its own expert, so it
              synthesises and trains again and every peer fetches the new one

Then it stops injecting and waits (--settle seconds at most) until every site is ready with an expert of every
site, all hold the same live artifacts, none has a leftover temp file, and none died on its own. It prints the
faults and the outcome, writes --json, and exits 1 if the federation did not converge.

    .venv/bin/python scripts/faults.py --nodes 5 --minutes 10 --json runs/faults.json
    sudo .venv/bin/python scripts/faults.py --nodes 5 --minutes 10 --disk --json runs/faults.json
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ffnode.daemon import control
from ffnode.data.sources import load_dataset, save_npz
from harness.localnet import Daemons, init_home, status

console = Console(stderr=True)
KINDS = ("kill", "corrupt", "disk", "retrain")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nodes", type=int, default=5, help="sites, one digits class each (2-10)")
    p.add_argument("--minutes", type=float, default=10.0, help="how long faults are injected")
    p.add_argument("--interval", type=float, default=15.0, help="mean seconds between two faults")
    p.add_argument("--settle", type=float, default=300.0, help="seconds to converge after the last fault")
    p.add_argument("--disk", action="store_true", help="also fill disks (root: every home on its own tmpfs)")
    p.add_argument(
        "--disk-mb", type=int, default=128, help="size of each home's tmpfs (a default-profile site needs ~60)"
    )
    p.add_argument("--profile", default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base-port", type=int, default=47600)
    p.add_argument("--workdir", type=Path, default=Path("runs/faults"), help="homes and logs (wiped first)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if not 2 <= args.nodes <= 10:
        p.error("--nodes must be between 2 and 10")
    return args


class Disks:
    """One tmpfs per home, mounted by us and unmounted on exit (whatever happens)."""

    def __init__(self, mb: int) -> None:
        self.mb = mb
        self.mounts: list[Path] = []

    def mount(self, path: Path) -> None:
        path.mkdir(parents=True)
        size = f"size={self.mb}m"
        subprocess.run(["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(path)], check=True, capture_output=True)
        self.mounts.append(path)

    def unmount_all(self) -> None:
        while self.mounts:
            subprocess.run(["umount", "-l", str(self.mounts.pop())], check=False, capture_output=True)


def make_homes(args: argparse.Namespace, disks: Disks | None) -> list[Path]:
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    classes = [str(c) for c in range(args.nodes)]
    digits = load_dataset("digits", split="train", classes=[str(c) for c in range(10)])
    homes, addrs = [], []
    for i in range(args.nodes):
        data = args.workdir / f"class{i}.npz"
        keep = digits.labels == i
        save_npz(data, {"train": (digits.images[keep], digits.labels[keep])}, classes)
        home = args.workdir / f"node{i}"
        if disks is not None:
            disks.mount(home)
        boot = addrs[:1] + addrs[-1:]  # the first site and the previous one: discovery finds the rest
        addrs.append(init_home(home, port=args.base_port + i, data=data, classes=classes, bootstrap=boot,
                               profile=args.profile, seed=args.seed + i))  # fmt: skip
        homes.append(home)
    return homes


def damage(home: Path, rng: random.Random) -> str:
    """Flip a byte in, or empty, one random store file or checkpoint of a stopped node; say which."""
    files = [p for d in ("manifests", "revocations", "blobs") for p in (home / "store" / d).glob("[!.]*")]
    files += list((home / "work").rglob("factory_checkpoint.safetensors"))
    if not files:
        return "nothing to damage yet"
    path = rng.choice(files)
    try:
        data = bytearray(path.read_bytes())
        if not data or rng.random() < 0.2:
            path.write_bytes(b"")
            return f"emptied {path.relative_to(home)}"
        at = rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)
        with open(path, "r+b") as f:  # in place: works on a full disk too
            f.seek(at)
            f.write(data[at : at + 1])
    except OSError as exc:  # the node deleted it meanwhile (it was still shutting down), or the disk is full
        return f"could not damage {path.relative_to(home)}: {exc}"
    return f"flipped a bit at byte {at} of {path.relative_to(home)}"


def retrain(home: Path, s: dict | None) -> str:
    """Revoke the site's current expert: it trains a new one (synthesis, expert), and its peers fetch that."""
    if not s or not s.get("current_expert"):
        return "no expert to revoke yet"
    try:
        control.call(home, "revoke", {"ids": [s["current_expert"]], "reason": "faults.py: retrain"}, timeout=30)
    except (control.ControlError, OSError, ValueError) as exc:  # the node is restarting, or its disk is full
        return f"revoke failed: {exc}"
    return f"revoked its expert {s['current_expert'][:12]}"


def fill_for(home: Path, seconds: float) -> threading.Thread:
    """Take every free byte of home's filesystem for `seconds`, in a thread."""

    def run() -> None:
        filler = home / "filler"
        try:
            with open(filler, "wb", buffering=0) as f:  # unbuffered: closing must not flush into a full disk
                for size in (1 << 20, 4096):
                    try:
                        while True:
                            f.write(b"\0" * size)
                    except OSError:
                        pass
            time.sleep(seconds)
        finally:
            filler.unlink(missing_ok=True)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def inject(args: argparse.Namespace, homes: list[Path], daemons: Daemons, rng: random.Random) -> list[dict]:
    kinds = [k for k in KINDS if k != "disk" or args.disk]
    faults: list[dict] = []
    t0, end = time.monotonic(), time.monotonic() + args.minutes * 60
    fillers: list[threading.Thread] = []
    while (now := time.monotonic()) < end:
        time.sleep(min(rng.expovariate(1 / args.interval), max(0.0, end - now)))
        daemons.check()  # a node that died on its own ends the run: that is the failure this script looks for
        i, kind = rng.randrange(len(homes)), rng.choice(kinds)
        home, s = homes[i], status(homes[i])
        fault = {"t_s": round(time.monotonic() - t0, 1), "kind": kind, "node": i, "phase": s["phase"] if s else "down"}
        if kind == "disk":
            fillers.append(fill_for(home, 20.0))
            fault["detail"] = "disk full for 20 s"
        elif kind == "retrain":
            fault["detail"] = retrain(home, s)
        else:
            daemons.kill(home)
            fault["detail"] = damage(home, rng) if kind == "corrupt" else "SIGKILL"
            time.sleep(rng.uniform(0, 5))
            daemons.start(home)
        console.print(f"{fault['t_s']:7.1f} s  node {i} ({fault['phase']}): {kind}: {fault['detail']}")
        faults.append(fault)
    for t in fillers:
        t.join()
    return faults


def converged(homes: list[Path], daemons: Daemons) -> dict[str, Any] | None:
    daemons.check()
    sts = [status(h) for h in homes]
    if any(s is None or s["phase"] != "ready" or s["artifacts"].get("expert_live", 0) != len(homes) for s in sts):
        return None
    if any(k.endswith("_pending") and v for s in sts for k, v in s["artifacts"].items()):  # type: ignore[union-attr]
        return None
    live = [{r["id"] for r in control.call(h, "artifacts") if r["state"] == "live"} for h in homes]
    if any(x != live[0] for x in live):
        return None
    temps = [str(p) for h in homes for d in ("manifests", "revocations", "tmp") for p in (h / "store" / d).glob(".*")]
    return {"live_artifacts": len(live[0]), "leftover_temp_files": temps}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    disks = Disks(args.disk_mb) if args.disk else None
    report: dict[str, Any] = {"nodes": args.nodes, "minutes": args.minutes, "profile": args.profile, "seed": args.seed}
    try:
        homes = make_homes(args, disks)
        with Daemons() as daemons:
            for home in homes:
                daemons.start(home)
            t0 = time.monotonic()
            try:
                report["faults"] = inject(args, homes, daemons, rng)
                deadline, done = time.monotonic() + args.settle, None
                while done is None and time.monotonic() < deadline:
                    time.sleep(2)
                    done = converged(homes, daemons)
                report["converged"] = done is not None and not done["leftover_temp_files"]
                report["settle"] = done
                report["crashed"] = None
            except RuntimeError as exc:  # Daemons.check: a node exited on its own
                report.update(converged=False, crashed=str(exc))
            report["wall_s"] = round(time.monotonic() - t0, 1)
            report["quarantined"] = sum(
                len(list((h / "store" / "quarantine").iterdir()))
                for h in homes
                if (h / "store" / "quarantine").exists()
            )
    finally:
        if disks is not None:
            disks.unmount_all()
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


def print_report(r: dict[str, Any]) -> None:
    t = Table(title=f"faults: {r['nodes']} sites, {r['minutes']} min, profile {r['profile']}", title_justify="left")
    t.add_column("")
    t.add_column("")
    by_kind: dict[str, int] = {}
    for f in r.get("faults", []):
        by_kind[f["kind"]] = by_kind.get(f["kind"], 0) + 1
    t.add_row("faults injected", ", ".join(f"{n} {k}" for k, n in sorted(by_kind.items())) or "none")
    phases = sorted({f["phase"] for f in r.get("faults", [])})
    t.add_row("phases hit", ", ".join(phases))
    t.add_row("files quarantined and fetched again", str(r.get("quarantined")))
    t.add_row("a node died on its own", r["crashed"] or "no")
    t.add_row("converged (ready, same live artifacts, no temp files)", str(r["converged"]))
    t.add_row("wall time", f"{r.get('wall_s')} s")
    Console().print(t)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # runs every `finally`: daemons stopped, disks unmounted
    report = main()
    sys.exit(0 if report["converged"] else 1)
