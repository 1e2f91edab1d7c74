"""Launch a Python worker in several processes with torchrun's environment (gloo on CPU)."""

from __future__ import annotations

import json
import os
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


def launch(worker: str, payload: Any, world_size: int = 2, timeout: float = 180) -> None:
    """Run the Python source ``worker`` in ``world_size`` processes, ``json.dumps(payload)`` as
    its ``sys.argv[1]``, with RANK, WORLD_SIZE, MASTER_ADDR... set as torchrun sets them.

    If one process fails the others (blocked in a collective) are killed; stderr goes to files so
    that no process can block on a full pipe. Fails with every failed rank's stderr tail.
    """
    port = free_port()
    logs = tempfile.TemporaryDirectory(prefix="drsl_ddp_logs_")
    processes, files = [], []
    for rank in range(world_size):
        env = {
            **os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
            "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        if sys.platform.startswith("linux"):
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # containers whose hostname does not resolve
        files.append(open(Path(logs.name) / f"rank{rank}.log", "w+b"))
        processes.append(subprocess.Popen(
            [sys.executable, "-c", worker, json.dumps(payload)], env=env,
            stdout=subprocess.DEVNULL, stderr=files[-1],
        ))
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in processes):
            failed = any(p.poll() not in (None, 0) for p in processes)
            if failed or time.monotonic() > deadline:
                for p in processes:
                    p.kill()
                break
            time.sleep(0.05)
        for p in processes:
            p.wait()
        errors = []
        for rank, (p, log) in enumerate(zip(processes, files)):
            if p.returncode:
                log.seek(0)
                errors.append(f"rank {rank} exited {p.returncode}:\n{log.read().decode(errors='replace')[-3000:]}")
        assert not errors, "\n".join(errors)
    finally:
        for log in files:
            log.close()
        logs.cleanup()
