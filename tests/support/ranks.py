"""Start N local ranks of an mx.distributed ring on 127.0.0.1, bounded in time, and always clean them up.

A lone rank retries its connection for a long time when a peer dies, so as soon as one rank fails the
others are killed; every rank is killed at the deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Ranks on one machine share its cores: one BLAS thread each, or a waiting rank's spinning threads slow the others.
SHARED_CORES = {"OPENBLAS_NUM_THREADS": "1"}


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class RankResult:
    rank: int
    returncode: int | None
    stdout: str
    stderr: str


def run_ranks(
    args: list[str],
    workdir: Path,
    n: int = 2,
    timeout: float = 60.0,
    stdin_text: str = "",
    kill_on_failure: bool = True,
) -> list[RankResult]:
    """Run `python3 *args` as ranks 0..n-1 (MLX_HOSTFILE + MLX_RANK); kill all when one fails (unless
    `kill_on_failure` is False: when every rank is expected to fail alike) or when time is up."""
    hostfile = workdir / "hosts.json"
    hostfile.write_text(json.dumps([f"127.0.0.1:{p}" for p in free_ports(n)]))
    procs, logs = [], []
    for rank in range(n):
        env = {**os.environ, "MLX_HOSTFILE": str(hostfile), "MLX_RANK": str(rank), **SHARED_CORES}
        out, err = open(workdir / f"rank{rank}.out", "w+"), open(workdir / f"rank{rank}.err", "w+")
        logs.append((out, err))
        proc = subprocess.Popen(
            [sys.executable, *args], env=env, stdin=subprocess.PIPE, stdout=out, stderr=err, text=True
        )
        proc.stdin.write(stdin_text)
        proc.stdin.close()
        procs.append(proc)
    try:
        wait_all(procs, timeout, kill_on_failure)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    results = []
    for rank, (p, (out, err)) in enumerate(zip(procs, logs)):
        out.seek(0)
        err.seek(0)
        results.append(RankResult(rank, p.returncode, out.read(), err.read()))
        out.close()
        err.close()
    return results


def wait_all(procs: list[subprocess.Popen], timeout: float, stop_on_failure: bool = True) -> None:
    """Return when every process exited, or as soon as one failed (if `stop_on_failure`), or at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes) or (stop_on_failure and any(c not in (None, 0) for c in codes)):
            return
        time.sleep(0.05)


def describe(results: list[RankResult]) -> str:
    return "\n".join(
        f"rank {r.rank} exit {r.returncode}\nstdout: {r.stdout[-2000:]}\nstderr: {r.stderr[-3000:]}" for r in results
    )


def run_launcher(cmd: list[str], timeout: float) -> tuple[str, str]:
    """Run a launcher (mlx.launch) in its own process group with a stdin pipe; (stdout, stderr). At the deadline
    the whole group goes, ranks included, so nothing outlives the test."""
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **SHARED_CORES},
        start_new_session=True,
    )
    try:
        return proc.communicate("", timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start_ranks(args: list[str], workdir: Path, n: int = 2) -> list[subprocess.Popen]:
    """Start long-running ranks (a server); the caller must `stop_ranks` them in a finally block."""
    hostfile = workdir / "hosts.json"
    hostfile.write_text(json.dumps([f"127.0.0.1:{p}" for p in free_ports(n)]))
    procs = []
    for rank in range(n):
        with open(workdir / f"rank{rank}.err", "w") as err:  # the child keeps its own copy of the descriptor
            env = {**os.environ, "MLX_HOSTFILE": str(hostfile), "MLX_RANK": str(rank), **SHARED_CORES}
            procs.append(
                subprocess.Popen(
                    [sys.executable, *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env
                )
            )
    return procs


def stop_ranks(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def wait_for_http(url: str, procs: list[subprocess.Popen], timeout: float) -> None:
    """Poll `url` until it answers; fail early when a rank died."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise AssertionError(f"a rank exited early: {[p.poll() for p in procs]}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")
