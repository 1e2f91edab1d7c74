"""Start-up of a multi-process job: every process checks in at the master's store, with a bounded wait.

torch's ``env://`` start waits for a missing process in silence, for as long as its process-group
timeout (30 minutes for gloo, 10 for NCCL), and then names nobody. Here each process registers its rank in the TCPStore at
MASTER_ADDR:MASTER_PORT and waits at most ``dist.start_timeout`` seconds until all WORLD_SIZE ranks
have; when the wait runs out, the missing ranks are named. The process group is then built on the
same store.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from datetime import timedelta

import torch.distributed as dist

from drsl.config import DistConfig
from drsl.errors import DistributedError, first_line

log = logging.getLogger(__name__)

#: Joins made by this process so far: a command run after another in one process joins again,
#: and a store that outlives the first join keeps its keys.
_joins = itertools.count()


def describe_ranks(ranks: list[int]) -> str:
    """'rank 3' or 'ranks 0-2, 5': sorted ranks with runs shortened."""
    runs: list[list[int]] = []
    for rank in sorted(ranks):
        if runs and rank == runs[-1][-1] + 1:
            runs[-1].append(rank)
        else:
            runs.append([rank])
    parts = [str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs]
    return f"rank{'s' if len(ranks) > 1 else ''} {', '.join(parts)}"


def _wait_for_listener(address: str, port: int, deadline: float, fail: str) -> None:
    """Return once something accepts connections at ``address:port``; DistributedError ``fail``
    (plus the last reason) at the deadline. Polled here because torch's client logs a C++ trace
    for every failed attempt."""
    while True:
        try:
            with socket.create_connection((address, port), timeout=1.0):
                return
        except socket.gaierror as exc:
            raise DistributedError(f"MASTER_ADDR={address} cannot be resolved ({exc.strerror})") from None
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise DistributedError(f"{fail} ({exc.strerror or exc})") from None
        time.sleep(0.2)


def join(rank: int, world_size: int, address: str, port: int, config: DistConfig, announce: bool) -> dist.Store:
    """Wait for every rank at ``address:port``; the store to build the process group on.

    Rank 0 serves the store, unless torchrun's agent serves it (then every rank is a client).
    ``announce``: log the line saying what this process waits for (one process per node does).
    DistributedError naming the missing ranks, the address and ``dist.start_timeout`` when the
    wait runs out.
    """
    where = f"MASTER_ADDR:MASTER_PORT={address}:{port}"
    limit = f"dist.start_timeout={config.start_timeout:g} s"
    if announce:
        log.info("rank %d: waiting for %d processes at %s (at most %s)", rank, world_size, where, limit)
    deadline = time.monotonic() + config.start_timeout
    serves = rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
    if not serves:
        _wait_for_listener(
            address, port, deadline,
            f"rank {rank} of WORLD_SIZE={world_size} found no master (rank 0) at {where} within {limit}: start "
            "rank 0 with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE, or raise dist.start_timeout",
        )
    try:
        store = dist.TCPStore(
            address, port, None, serves, timeout=timedelta(seconds=config.start_timeout),
            wait_for_workers=False, multi_tenant=True,
        )
    except (RuntimeError, ValueError) as exc:
        action = "serve the store" if serves else "reach the store"
        raise DistributedError(f"rank {rank} cannot {action} at {where} ({first_line(exc)})") from None
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    checkin = dist.PrefixStore(f"drsl.start/{restart}/{next(_joins)}/", store)
    try:
        checkin.set(f"rank{rank}", "")
        if checkin.add("joined", 1) == world_size:
            checkin.set("all", "")
        joined = _wait_for_key(checkin, "all", deadline)
    except RuntimeError:  # the store went away
        joined = False
    if not joined:
        raise DistributedError(_missing(checkin, rank, world_size, where, limit))
    store.set_timeout(timedelta(seconds=config.collective_timeout))
    return dist.PrefixStore("default_pg", store)  # torch's env:// start uses the same prefix


def _wait_for_key(store: dist.Store, key: str, deadline: float) -> bool:
    """Whether ``key`` appears in ``store`` before the deadline. Polled, with growing pauses: the
    store's own timed wait logs a C++ warning when it runs out."""
    pause = 0.05
    while not store.check([key]):
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(2 * pause, 1.0)
    return True


def _missing(checkin: dist.Store, rank: int, world_size: int, where: str, limit: str) -> str:
    """The message when the wait ran out or the store went away."""
    try:
        missing = [r for r in range(world_size) if not checkin.check([f"rank{r}"])]
    except RuntimeError:
        return (
            f"rank {rank} of WORLD_SIZE={world_size} lost the store at {where} while waiting for the other ranks "
            f"(rank 0 gave up or stopped: see its message)"
        )
    if not missing:  # the last one joined as the wait ran out
        return f"every rank of WORLD_SIZE={world_size} joined at {where}, but only as {limit} ran out: raise it"
    return (
        f"{describe_ranks(missing)} of WORLD_SIZE={world_size} did not join at {where} within {limit}: start every "
        "rank with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE, or raise dist.start_timeout"
    )
