"""The query worker: Product-of-Experts in a process of its own, so the node process never imports torch.

Two halves in one module, so the wire format has one home:

- The worker, `python -m ffnode.query_worker --threads N`, holds the experts as torch modules (an ExpertCache,
  the one ffnode.query.ExpertPool holds) and answers one request at a time on stdin/stdout. It knows nothing of
  the store: each request names the experts (ID, manifest body, absolute blob path), the priors and the images.
  It loads the experts it does not hold, drops those not named, and reports any that fail to load (ID -> why)
  instead of answering, so the node leaves them out and asks again. It opens no network connection, ignores
  SIGINT (a Ctrl-C reaches the node's whole process group; the node stops it) and exits when its stdin closes,
  which is when the node is gone, however it went.
- The client, `QueryService` (torch-free), is what the node calls. It judges the experts on their manifests
  in-process (ffnode.voters: coverage for `ffnode status`, refusals) and sends the worker only queries that get
  an answer. One request at a time; each has a deadline. The worker is started at the first request (or by
  `start`), replaced when it has died, and stopped after `idle_s` idle seconds: a crash or a hang costs the
  query it happened on (WorkerError, logged), never the node.

Wire: every message is a 4-byte big-endian length and that many bytes of msgpack, at most MAX_MESSAGE_BYTES.

    request  {"experts": [[id, its manifest body (canonical_bytes), blob path or None], ...],
              "priors": [train_counts (K, C), real_counts (C,)] or None (the product rule),
              "images": B*H*W*C uint8 bytes, or None to load the experts only, "shape": [B, H, W, C]}
    answer   {"failed": {id: why, ...}}                         an expert did not load: nothing answered
             {"failed": {}, "labels": B int64 bytes, "probs": B*C float32 bytes, "classes": C}
             {"error": why}                                     the request was not answered; the worker goes on
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import msgpack
import numpy as np

from ffnode.arch import LoadError
from ffnode.artifacts.codec import canonical_bytes, decode
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store
from ffnode.voters import Priors, Voters, admit, answer, check_batch

if TYPE_CHECKING:
    from ffnode.query import ExpertCache

log = logging.getLogger("ffnode.query")

HEADER = struct.Struct(">I")
MAX_MESSAGE_BYTES = 2**30  # the node's largest query (control.MAX_REQUEST of base64) and its answer fit
REQUEST_TIMEOUT_S = 300.0  # what `ffnode query` waits for the node
STOP_S = 5.0  # a worker told to stop (stdin closed) gets this long before it is killed


# -- the worker process ----------------------------------------------------------------------------------------
def read_message(stream: BinaryIO) -> Any | None:
    """The next message, or None once the stream ends (the writer is gone)."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(f"a message of {size} bytes: over MAX_MESSAGE_BYTES")
    data = stream.read(size)
    return None if len(data) < size else msgpack.unpackb(data)


def frame(message: Any) -> bytes:
    """`message` as it travels: length and msgpack; ValueError if it is over MAX_MESSAGE_BYTES."""
    data = msgpack.packb(message)
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"a message of {len(data)} bytes is over the query worker's {MAX_MESSAGE_BYTES}")
    return HEADER.pack(len(data)) + data


def handle(cache: ExpertCache, request: dict[str, Any]) -> dict[str, Any]:
    """One request's answer (the module docstring's wire format)."""
    from ffnode.loaders import load_expert_file
    from ffnode.poe import poe_predict

    named = {aid: (body, path) for aid, body, path in request["experts"]}

    def load(aid: str) -> Any:
        body, path = named[aid]
        m = Manifest.from_body(decode(body))
        if path is None:  # the node no longer holds it live
            raise LoadError(m, "its blob is not held live here")
        return load_expert_file(m, Path(path))

    models, failed = cache.sync(list(named), load)
    if failed or request["images"] is None:
        return {"failed": failed}
    images = np.frombuffer(bytearray(request["images"]), dtype=np.uint8).reshape(request["shape"])
    priors = None if request["priors"] is None else Priors(*(np.array(c, dtype=np.float64) for c in request["priors"]))
    labels, probs = poe_predict([model for _, model in models], images, priors)
    return {
        "failed": {},
        "labels": labels.astype("<i8").tobytes(),
        "probs": probs.astype("<f4").tobytes(),
        "classes": probs.shape[1],
    }


def serve(requests: BinaryIO, answers: BinaryIO, threads: int) -> None:
    """Answer requests in order until `requests` ends."""
    import torch

    from ffnode.query import ExpertCache

    if threads > 0:
        torch.set_num_threads(threads)
    cache = ExpertCache()
    while (request := read_message(requests)) is not None:
        try:
            data = frame(handle(cache, request))
        except Exception as exc:  # a malformed request or a failing model: this request, not the worker
            data = frame({"error": f"{type(exc).__name__}: {str(exc)[:1000]}"})
        try:
            answers.write(data)
            answers.flush()
        except BrokenPipeError:  # the node is gone
            return


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ffnode.query_worker", description="Answer a node's PoE queries.")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Before torch loads its OpenMP runtime: threads that wait at a barrier sleep rather than spin. The worker
    # shares the cores with the node's training jobs, and spinning threads there made a one-image query on
    # 2 busy cores take 60-740 ms instead of 8-16 ms (scripts/bench_query.py).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print (a library's) goes to the log, not the wire
    from ffnode.jobs.worker import no_network

    sys.addaudithook(no_network)  # the worker reads the files the node names and computes, as a job does
    serve(sys.stdin.buffer, answers, args.threads)


# -- the client: what the node calls ---------------------------------------------------------------------------
class WorkerError(RuntimeError):
    """The query worker died, hung or could not answer: this query fails; the next starts a fresh worker."""


class _Died(WorkerError):
    """The worker's pipes closed or its answer did not parse."""


class QueryService:
    """Queries by PoE through the query worker; coverage and refusals from the manifests, in this process.

    `threads`: the worker's torch threads (0: torch's default). `idle_s` > 0: stop the worker after that many
    seconds without a request (the next one starts it again, loading the experts: seconds). `warm`: `start`
    starts the worker and loads the experts; without it `start` does nothing and the first query does that.
    `timeout_s`: the longest one request may take, the first after a start (torch import, loading) included."""

    def __init__(
        self,
        store: Store,
        num_classes: int,
        image_shape: tuple[int, int, int],
        *,
        threads: int = 0,
        idle_s: float = 0.0,
        warm: bool = True,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.store, self.image_shape = store, tuple(image_shape)
        self.voters = Voters(store, num_classes, image_shape)
        self.threads, self.idle_s, self.warm, self.timeout_s = threads, idle_s, warm, timeout_s
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()  # one request at a time: the answers come back in order on one pipe
        self._idle: asyncio.Task[None] | None = None
        self._closed = False
        self.failures = 0  # queries the worker failed (died, hung, could not answer): `ffnode status` shows them
        self._bodies: dict[str, bytes] = {}  # voter ID -> its manifest body, packed once (asdict is not cheap)

    @property
    def pid(self) -> int | None:
        """The worker's process ID while one runs."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def coverage(self, classes: list[str], rule: str) -> dict[str, Any]:
        """What a query would be answered with now, from the manifests alone: the `coverage` document of
        ffnode.voters that `ffnode status` shows."""
        return await asyncio.to_thread(self.voters.coverage, classes, rule)

    async def start(self) -> None:
        """Start the worker and load the voters now, so the first query does not wait for torch and the experts
        (a no-op unless `warm`). A worker that fails is logged, not raised: the first query tries again."""
        if not self.warm:
            return
        async with self._lock:
            try:
                voters = await asyncio.to_thread(self.voters.current)
                self._leave_out(voters, await self._ask(await asyncio.to_thread(self._request, voters, None, None)))
            except Exception as exc:  # whatever went wrong costs the warm start, never the node
                log.warning("query worker: %s", exc)
            finally:
                self._touch()

    async def query(self, images: np.ndarray, classes: list[str], rule: str) -> dict[str, Any]:
        """images: (B, H, W, C) uint8. The answer document of ffnode.voters.answer, as ExpertPool.query gives it.

        NoExperts or CannotAnswer if the query is refused, ValueError for a bad batch or rule, WorkerError if the
        worker died or hung on it."""
        check_batch(images, self.image_shape)
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 pixels, got {images.dtype}")
        async with self._lock:
            try:
                while True:  # each round leaves out at least one expert that failed to load, or answers
                    voters, report, priors, request = await asyncio.to_thread(self._plan, images, classes, rule)
                    reply = await self._ask(request)
                    if not self._leave_out(voters, reply):
                        break
            except WorkerError as exc:  # this query's cost, named with what it asked of the worker
                self.failures += 1
                log.warning("query of %d image(s) over experts %s failed: %s", len(images),
                            [m.id[:12] for m in voters], exc)  # fmt: skip
                raise
            finally:
                self._touch()
        labels = np.frombuffer(reply["labels"], dtype="<i8")
        probs = np.frombuffer(reply["probs"], dtype="<f4").reshape(len(labels), reply["classes"])
        if len(labels) != len(images) or probs.shape[1] != len(classes):
            raise WorkerError(f"the query worker answered {probs.shape} for {len(images)} images of {len(classes)}")
        return answer(labels, probs, classes, voters, priors, report)

    async def close(self) -> None:
        """Stop the worker (a query in flight fails); nothing starts one again."""
        self._closed = True
        if self._idle is not None:
            self._idle.cancel()
        await self._stop()

    # -- requests ----------------------------------------------------------------------------------------------
    def _plan(
        self, images: np.ndarray, classes: list[str], rule: str
    ) -> tuple[list[Manifest], dict[str, Any], Priors | None, bytes]:
        """The voters, their coverage report and priors, and the request; NoExperts/CannotAnswer if refused."""
        voters = self.voters.current()
        report, priors = admit(self.store, voters, classes, rule)
        return voters, report, priors, self._request(voters, priors, images)

    def _request(self, voters: list[Manifest], priors: Priors | None, images: np.ndarray | None) -> bytes:
        self._bodies = {m.id: self._bodies.get(m.id) or canonical_bytes(m.body()) for m in voters}
        return frame(
            {
                "experts": [[m.id, self._bodies[m.id], self._blob_path(m)] for m in voters],
                "priors": None if priors is None else [priors.train_counts.tolist(), priors.real_counts.tolist()],
                "images": None if images is None else np.ascontiguousarray(images).tobytes(),
                "shape": None if images is None else list(images.shape),
            }
        )

    def _blob_path(self, m: Manifest) -> str | None:
        try:
            return str(self.store.blob_file(m).absolute())
        except KeyError:  # no longer live: the worker reports it as failed unless it holds the model already
            return None

    def _leave_out(self, voters: list[Manifest], reply: dict[str, Any]) -> bool:
        """Leave out the experts the worker could not load; whether there were any."""
        failed = reply["failed"]
        for m in voters:
            if m.id in failed:
                self.voters.leave_out(m, str(failed[m.id]))
        return bool(failed)

    async def _ask(self, request: bytes) -> dict[str, Any]:
        """The worker's answer to `request`. A worker found dead (it died since its last answer) is replaced and
        asked again once; one started for this request that dies on it costs the request."""
        fresh = await self._ensure()
        try:
            return await self._exchange(request)
        except _Died as exc:
            if fresh:
                raise
            log.warning("%s: starting another", exc)
            return await self._ask(request)

    async def _exchange(self, request: bytes) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            async with asyncio.timeout(self.timeout_s):
                proc.stdin.write(request)
                await proc.stdin.drain()
                (size,) = HEADER.unpack(await proc.stdout.readexactly(HEADER.size))
                if size > MAX_MESSAGE_BYTES:
                    raise ValueError(f"an answer of {size} bytes")
                reply = msgpack.unpackb(await proc.stdout.readexactly(size))
        except TimeoutError:
            await self._kill()
            raise WorkerError(f"the query worker did not answer in {self.timeout_s:g} s: stopped it") from None
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            code = await self._kill()
            why = "its answer did not parse" if isinstance(exc, ValueError) else f"exit code {code}"
            raise _Died(f"the query worker (pid {proc.pid}) died ({why})") from None
        except BaseException:  # cancelled mid-request: its answer would be read as the next request's
            self._discard()
            raise
        if "error" in reply:
            raise WorkerError(f"the query worker could not answer: {reply['error']}")
        return reply

    # -- the process -------------------------------------------------------------------------------------------
    async def _ensure(self) -> bool:
        """Start the worker unless one runs; whether it was started now."""
        if self._closed:
            raise WorkerError("the query service is closed")
        if (proc := self._proc) is not None:
            if proc.returncode is None:
                return False
            log.warning("the query worker (pid %d) exited (code %s): starting another", proc.pid, proc.returncode)
            await self._kill()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "ffnode.query_worker",
                "--threads",
                str(self.threads),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        except OSError as exc:  # no memory or processes left for it
            raise WorkerError(f"the query worker could not be started: {exc}") from None
        log.info("query worker started (pid %d)", self._proc.pid)
        return True

    def _discard(self) -> asyncio.subprocess.Process | None:
        """Kill the worker now (no waiting); the process, to reap."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            try:
                proc.kill()
            except ProcessLookupError:  # it exited a moment ago
                pass
        return proc

    async def _kill(self) -> int | None:
        """Kill the worker and reap it; its exit code."""
        proc = self._discard()
        return None if proc is None else await proc.wait()

    async def _stop(self) -> None:
        """Ask the worker to exit (its stdin closes), and kill it after STOP_S."""
        if (proc := self._proc) is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            async with asyncio.timeout(STOP_S):
                await proc.wait()
        except TimeoutError:
            await self._kill()
        finally:
            if self._proc is proc:
                self._proc = None

    def _touch(self) -> None:
        """A request just ended: the idle countdown starts again."""
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.create_task(self._stop_when_idle()) if self.idle_s > 0 and self._proc is not None else None

    async def _stop_when_idle(self) -> None:
        await asyncio.sleep(self.idle_s)
        async with self._lock:
            self._idle = None
            if self._proc is not None:
                log.info("query worker (pid %d) idle for %g s: stopping it", self._proc.pid, self.idle_s)
                await self._stop()


if __name__ == "__main__":
    main()
