"""The test run's one fork server (ffnode/jobs/forkserver.py): every daemon a test starts through
harness.localnet.init_home forks its jobs from it, as the testnet's sites do, instead of importing torch afresh for
each job (~3 CPU seconds). The runner's own tests (test_jobs.py) build their runners without it, so fresh workers
stay tested too."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from harness import localnet


@pytest.fixture(scope="session", autouse=True)
def shared_forkserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with localnet.forkserver(tmp_path_factory.mktemp("forkserver"), wait=False) as server:
        localnet.JOB_SETTINGS["forkserver"] = server.path
        try:
            yield server.path
        finally:
            localnet.JOB_SETTINGS.pop("forkserver", None)


@pytest.fixture(scope="session", autouse=True)
def one_thread_per_worker() -> None:
    """Under pytest-xdist (the README's test command runs two workers, pyproject's addopts) each worker's torch
    computes on one thread: two workers spinning two OpenMP threads each on two cores made an 18 s test take 154 s."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
