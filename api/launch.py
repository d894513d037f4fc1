"""`netc train --nproc K`: K ranks on this machine, started and watched as torchrun would.

Each rank is `python -m netc train ...` with the same arguments (less --nproc) and the environment torchrun
sets: RANK and LOCAL_RANK (0..K-1), WORLD_SIZE and LOCAL_WORLD_SIZE (K), MASTER_ADDR 127.0.0.1 and a free
MASTER_PORT; and, unless it is set, OMP_NUM_THREADS to the cores divided among the ranks (torchrun sets 1),
so that K ranks of OpenMP threads do not fight over the same cores. Rank 0 prints; the others are quiet. When a rank fails, the others notice at their next
collective and stop with a message of their own (runtime/distributed.py); whichever are still running
`grace` seconds later (hung ones) are terminated, and the launcher says which rank failed first. Ctrl-C
reaches every rank (they share the terminal's process group) and each saves and stops; SIGTERM and SIGHUP sent
to the launcher alone are passed on to the ranks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from netc.compiler.errors import NetcError

POLL_SECONDS = 0.1
# What a rank that a stopping signal made save and stop exits with (cli_train.py): nothing went wrong.
STOPPED = {128 + getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (rank 0's rendezvous store takes it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def without_nproc(argv: list) -> list:
    """The command line without its --nproc option (as `--nproc K` or `--nproc=K`)."""
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == "--nproc":
            skip = True
        elif not word.startswith("--nproc="):
            out.append(word)
    return out


def launch_ranks(argv: list, nproc: int, grace: float) -> int:
    """Run `python -m netc ARGV` as `nproc` ranks and wait for them; returns the exit status to give: 0, or
    the first failing rank's."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise NetcError(f"--nproc must be a positive number of processes, got {nproc!r}")
    port = free_port()
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // nproc))
    ranks = []
    for rank in range(nproc):
        env = {
            **os.environ, "OMP_NUM_THREADS": threads, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
        }
        ranks.append(subprocess.Popen([sys.executable, "-m", "netc", *argv], env=env))
    return watch(ranks, grace)


def watch(ranks: list, grace: float) -> int:
    """Wait for every rank; after the first failure give the others `grace` seconds, then terminate them."""
    forwarded = _forward_signals(ranks)
    failed, deadline = None, None
    try:
        while any(process.poll() is None for process in ranks):
            if failed is None:
                failed = next((r for r, p in enumerate(ranks) if p.poll() not in (None, 0)), None)
                if failed is not None:
                    deadline = time.monotonic() + grace
            elif time.monotonic() > deadline:
                stuck = [r for r, p in enumerate(ranks) if p.poll() is None]
                print(f"netc: rank {failed} failed; stopping ranks {', '.join(map(str, stuck))}, still "
                      f"running {grace:g} s later", file=sys.stderr, flush=True)
                for rank in stuck:
                    ranks[rank].kill()
            time.sleep(POLL_SECONDS)
    finally:
        for signum, handler in forwarded.items():
            signal.signal(signum, handler)
    if failed is None:
        failed = next((r for r, p in enumerate(ranks) if p.returncode != 0), None)
    if failed is None:
        return 0
    status = ranks[failed].returncode
    if len(ranks) > 1 and status not in STOPPED:  # a Ctrl-C stops every rank, which says so itself
        how = f"exited with status {status}" if status > 0 else f"was killed by {signal.Signals(-status).name}"
        print(f"netc: rank {failed} of {len(ranks)} {how}", file=sys.stderr, flush=True)
    return status if status > 0 else 128 - status  # killed by signal N: 128 + N, as a shell reports it


def _forward_signals(ranks: list) -> dict:
    """SIGTERM and SIGHUP to the launcher reach the ranks; SIGINT (the terminal's Ctrl-C) reaches them
    anyway, so the launcher only waits for them to save."""

    def forward(signum, frame):
        for process in ranks:
            if process.poll() is None and signum != signal.SIGINT:
                process.send_signal(signum)

    names = ("SIGINT", "SIGTERM", "SIGHUP")
    return {
        getattr(signal, name): signal.signal(getattr(signal, name), forward)
        for name in names
        if hasattr(signal, name)
    }
