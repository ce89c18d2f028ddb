"""The memory sampler (scripts/harness/memory.py) follows a real process tree, as a node and its workers form."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from harness.memory import MemorySampler, children_of, descendants, rss_mb

# one level of a tree: writes argv[1] MB (so they are resident), starts the levels after it, waits for stdin's end
TREE = """
import os, subprocess, sys
keep = b"x" * (int(sys.argv[1]) * 2**20)
below = sys.argv[2:]
child = subprocess.Popen([sys.executable, "-c", os.environ["TREE"], *below], stdin=subprocess.PIPE) if below else None
sys.stdin.read()
if child:
    child.communicate()
"""
NODE_MB, GRANDCHILD_MB = 60, 150


def test_sampler_sees_a_tree_and_its_memory() -> None:
    """A root holding 60 MB, its child nothing, its grandchild 150 MB: the root is the node, the rest its workers."""
    env = {**os.environ, "TREE": TREE}
    cmd = [sys.executable, "-c", TREE, str(NODE_MB), "0", str(GRANDCHILD_MB)]
    root = subprocess.Popen(cmd, stdin=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:  # until the grandchild holds its memory
            below = descendants(root.pid, children_of())
            if len(below) == 2 and sum(map(rss_mb, below)) > GRANDCHILD_MB:
                break
            assert time.monotonic() < deadline, f"the tree never grew: {below}"
            time.sleep(0.1)
        with MemorySampler(lambda: [root.pid], interval=0.05) as sampler:
            time.sleep(0.3)
    finally:
        root.communicate(b"")  # stdin's end unwinds the tree, each level waiting for the one below
    r = sampler.report()
    assert r["samples"] >= 3 and r["workers_max"] == 2  # one sample at start, then the thread's
    assert NODE_MB <= r["node_rss_mb_max"] < NODE_MB + 50  # the root alone
    assert GRANDCHILD_MB <= r["workers_rss_mb_max"] < GRANDCHILD_MB + 80  # child and grandchild, interpreters and all
    assert r["total_rss_mb_max"] >= r["node_rss_mb_max"] + r["workers_rss_mb_max"] - 0.2  # rounding
    assert NODE_MB + GRANDCHILD_MB <= r["total_pss_mb_max"] <= r["total_rss_mb_max"] + 0.2


def test_a_root_that_is_gone_counts_nothing() -> None:
    """A daemon that ended (killed by a fault, restarting) leaves a pid with no /proc entry."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    sampler = MemorySampler(lambda: [gone.pid])
    sampler.sample()
    assert sampler.report() == {
        "node_rss_mb_max": 0.0,
        "workers_rss_mb_max": 0.0,
        "total_rss_mb_max": 0.0,
        "total_pss_mb_max": 0.0,
        "workers_max": 0,
        "samples": 1,
    }
