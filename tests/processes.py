"""Launch Python workers in several processes with torchrun's environment (gloo on CPU), or whole
torchrun launchers as the "nodes" of a multi-node job on this machine."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _base_env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # containers whose hostname does not resolve
    return env


def _supervise(commands: list[tuple[list[str], dict[str, str]]], timeout: float, name: str) -> None:
    """Run every ``(argv, env)`` at once, each in a session of its own; when one fails or the
    time runs out, kill every session (a launcher's workers with it). stderr goes to files so that
    no process can block on a full pipe. Fails with every failed process's stderr tail."""
    logs = tempfile.TemporaryDirectory(prefix="drsl_ddp_logs_")
    processes, files = [], []
    try:
        for index, (argv, env) in enumerate(commands):
            files.append(open(Path(logs.name) / f"{name}{index}.log", "w+b"))
            processes.append(subprocess.Popen(
                argv, env=env, stdout=subprocess.DEVNULL, stderr=files[-1], start_new_session=True,
            ))
        deadline = time.monotonic() + timeout
        timed_out = False
        while any(p.poll() is None for p in processes):
            timed_out = time.monotonic() > deadline
            if timed_out or any(p.poll() not in (None, 0) for p in processes):
                break
            time.sleep(0.05)
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        for p in processes:
            p.wait()
    try:
        errors = [f"timed out after {timeout} s"] if timed_out else []
        for index, (p, log) in enumerate(zip(processes, files)):
            if p.returncode:
                log.seek(0)
                errors.append(f"{name} {index} exited {p.returncode}:\n{log.read().decode(errors='replace')[-3000:]}")
        assert not errors, "\n".join(errors)
    finally:
        for log in files:
            log.close()
        logs.cleanup()


def launch(worker: str, payload: Any, world_size: int = 2, timeout: float = 180) -> None:
    """Run the Python source ``worker`` in ``world_size`` processes, ``json.dumps(payload)`` as
    its ``sys.argv[1]``, with RANK, WORLD_SIZE, MASTER_ADDR... set as torchrun sets them.

    If one process fails the others (blocked in a collective) are killed. Fails with every failed
    rank's stderr tail.
    """
    port = free_port()
    commands = []
    for rank in range(world_size):
        env = {
            **_base_env(), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
            "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
        }
        commands.append(([sys.executable, "-c", worker, json.dumps(payload)], env))
    _supervise(commands, timeout, "rank")


def launch_nodes(module_args: list[str], nodes: int = 2, timeout: float = 180) -> None:
    """Run ``python -m MODULE_ARGS`` as a job of ``nodes`` nodes of one process each: one torchrun
    launcher per node, meeting at a c10d rendezvous on 127.0.0.1 (as on a cluster, where each
    node starts the same launcher command). Fails with every failed launcher's stderr tail."""
    launcher = [
        sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", "--nproc_per_node=1",
        "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{free_port()}", f"--rdzv_id=drsl_test_{os.getpid()}",
        "--max_restarts=0", "--monitor_interval=0.1", "-m", *module_args,
    ]
    _supervise([(launcher, _base_env()) for _ in range(nodes)], timeout, "node")
