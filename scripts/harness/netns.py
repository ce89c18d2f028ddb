"""Sites on separate network stacks: one Linux network namespace per site on a virtual bridge (root only).

Topology: a namespace `<prefix>br` holds the bridge `br0`; site i lives in `<prefix>s<i>` with one interface
`eth0` at 10.213.0.<i+10>/24, a veth pair whose other end `p<i>` is a bridge port. Links can be rate-limited in
the kernel with `tbf` on both ends (this kernel has no `netem`, so no latency or loss) and cut by taking the
bridge port down. A site can be made unreachable from outside (`no_inbound`): an nftables rule in its
namespace drops every inbound connection attempt (TCP or not), as a NAT or a hospital firewall would, while its own
outbound connections work.

Everything is named with a prefix that carries our PID and is removed by `close()` (also on SIGINT/SIGTERM
and at exit); `sweep()` removes what a killed earlier run left behind. Traffic never leaves the namespaces:
the bridge has no uplink and the root namespace is not touched.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field

SUBNET = "10.213.0"  # a private range used only inside these namespaces
PREFIX_ROOT = "ffn"


class NetnsError(RuntimeError):
    """A namespace operation failed; the message has the command and its error."""


def available() -> str | None:
    """None if namespaces can be made here, else why not (for tests to skip with)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = f"{PREFIX_ROOT}probe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def nft_available() -> bool:
    return shutil.which("nft") is not None


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and out.returncode:
        raise NetnsError(f"{' '.join(cmd)}: {out.stderr.strip() or out.stdout.strip()}")
    return out


def sweep() -> list[str]:
    """Delete the namespaces of earlier runs whose process is gone; returns their names."""
    gone = []
    for line in run("ip", "netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith(PREFIX_ROOT) or "-" not in name:
            continue
        pid = name[len(PREFIX_ROOT) : name.index("-")]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            run("ip", "netns", "del", name, check=False)
            gone.append(name)
    return gone


@dataclass
class Netns:
    """n site namespaces on one bridge; `close()` removes them all."""

    n: int
    rate_mbit: float | None = None  # per link, each direction
    no_inbound: frozenset[int] = frozenset()  # sites that accept no inbound TCP connection
    prefix: str = field(default_factory=lambda: f"{PREFIX_ROOT}{os.getpid()}-")
    made: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.n <= 200:
            raise ValueError(f"between 1 and 200 sites, not {self.n}")
        if self.no_inbound and not nft_available():
            raise NetnsError("sites without inbound connections need nftables: apt-get install -y nftables")
        sweep()
        atexit.register(self.close)
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
                signal.signal(sig, _raise_exit)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    def site(self, i: int) -> str:
        return f"{self.prefix}s{i}"

    def ip(self, i: int) -> str:
        return f"{SUBNET}.{i + 10}"

    def exec_prefix(self, i: int) -> list[str]:
        """Prepend to a command to run it inside site i's namespace."""
        return ["ip", "netns", "exec", self.site(i)]

    def _add(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self.made.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def _build(self) -> None:
        self._add(self.bridge)
        run("ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.bridge, "link", "set", "br0", "up")
        for i in range(self.n):
            ns = self.site(i)
            self._add(ns)
            # made in the site namespace, the bridge end then moved: no name ever exists in the root namespace
            run("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}")
            run("ip", "-n", ns, "link", "set", f"p{i}", "netns", self.bridge)
            run("ip", "-n", ns, "addr", "add", f"{self.ip(i)}/24", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
            run("ip", "-n", self.bridge, "link", "set", f"p{i}", "master", "br0")
            run("ip", "-n", self.bridge, "link", "set", f"p{i}", "up")
            if self.rate_mbit:
                self.shape(i, self.rate_mbit)
            if i in self.no_inbound:
                self._drop_inbound(i)

    def shape(self, i: int, mbit: float) -> None:
        """Limit site i's link to `mbit` each way: tbf on the site's egress (upload) and the port's (download)."""
        burst = max(16 * 1024, int(mbit * 1e6 / 8 / 100))  # 10 ms worth of bytes, at least 16 KiB
        for ns, dev in ((self.site(i), "eth0"), (self.bridge, f"p{i}")):
            run("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                "rate", f"{mbit}mbit", "burst", str(burst), "latency", "50ms")  # fmt: skip

    def _drop_inbound(self, i: int) -> None:
        nft = ["ip", "netns", "exec", self.site(i), "nft"]
        run(*nft, "add", "table", "inet", "ffnode_nat")
        run(
            *nft, "add", "chain", "inet", "ffnode_nat", "input", "{ type filter hook input priority 0; policy accept; }"
        )
        for rule in (
            ["iif", "lo", "accept"],
            ["ct", "state", "established,related", "accept"],
            ["ct", "state", "new", "drop"],
        ):
            run(*nft, "add", "rule", "inet", "ffnode_nat", "input", *rule)

    def cut(self, i: int) -> None:
        """Take site i off the network (its bridge port goes down); its processes keep running."""
        run("ip", "-n", self.bridge, "link", "set", f"p{i}", "down")

    def restore(self, i: int) -> None:
        run("ip", "-n", self.bridge, "link", "set", f"p{i}", "up")

    def wire_bytes(self, i: int) -> dict[str, int]:
        """Bytes site i's interface sent and received (kernel counters: every header included)."""
        out = run("ip", "-n", self.site(i), "-s", "-j", "link", "show", "eth0").stdout
        stats = json.loads(out)[0]["stats64"]
        return {"tx": int(stats["tx"]["bytes"]), "rx": int(stats["rx"]["bytes"])}

    def close(self) -> None:
        """Delete every namespace this object made (their interfaces and qdiscs go with them). Idempotent."""
        while self.made:
            run("ip", "netns", "del", self.made.pop(), check=False)

    def __enter__(self) -> Netns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally`, so the namespaces are removed
