"""torch.distributed set-up for runs launched by torchrun (or a single process without it)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from drsl.config import ConfigError, DistConfig
from drsl.engine.rendezvous import join
from drsl.errors import first_line


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when several processes take part."""
        return self.world_size > 1


def wants_cuda(device: str) -> bool:
    """Whether ``device`` ("auto", "cpu" or "cuda") means CUDA: "auto" picks it when available.

    "cuda" without a usable GPU is a ConfigError saying so.
    """
    if device == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        raise ConfigError(f"--device cuda: no CUDA GPU is available (torch {torch.__version__}, {build}); use --device cpu or auto")
    return torch.cuda.is_available() if device == "auto" else device == "cuda"


def _env_int(name: str, default: int, low: int) -> int:
    """An integer set by the launcher (torchrun), checked: ConfigError naming the variable."""
    text = os.environ.get(name, str(default))
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise ConfigError(
            f"environment variable {name}={text!r} must be an integer of at least {low} (torchrun sets "
            f"it; unset {name} to run a single process)"
        )
    return value


def _master_address() -> tuple[str, int]:
    """MASTER_ADDR and MASTER_PORT, checked: ConfigError naming them."""
    address, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    if not address or not port:
        raise ConfigError(
            "environment variables MASTER_ADDR and MASTER_PORT must be set when WORLD_SIZE > 1 (torchrun sets "
            "them; unset WORLD_SIZE and RANK to run a single process)"
        )
    if not port.isdigit() or not 0 < int(port) < 2**16:
        raise ConfigError(f"environment variable MASTER_PORT={port!r} must be a port number (1 to 65535)")
    return address, int(port)


def init_distributed(device: str = "auto", config: DistConfig | None = None) -> DistInfo:
    """Join the process group that torchrun describes in the environment (if any) and pick a device.

    ``device`` is "auto" (CUDA when available, else CPU), "cpu" or "cuda". Launcher variables
    that make no sense (RANK outside WORLD_SIZE, non-numbers) are ConfigErrors naming them.
    ``config`` bounds the wait for the other processes (:func:`drsl.engine.rendezvous.join`)
    and each collective operation; default: :class:`DistConfig`'s.
    """
    use_cuda = wants_cuda(device)
    world_size = _env_int("WORLD_SIZE", 1, 1)
    rank = _env_int("RANK", 0, 0)
    local_rank = _env_int("LOCAL_RANK", 0, 0)
    if rank >= world_size:
        raise ConfigError(f"environment variables RANK={rank} and WORLD_SIZE={world_size}: the rank must be below the world size")
    if use_cuda and local_rank >= torch.cuda.device_count():
        raise ConfigError(f"environment variable LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPU(s) are visible")
    if world_size > 1 and not dist.is_initialized():
        config = config or DistConfig()
        store = join(rank, world_size, *_master_address(), config, announce=local_rank == 0)
        try:
            dist.init_process_group(
                backend="nccl" if use_cuda else "gloo", store=store, rank=rank, world_size=world_size,
                timeout=timedelta(seconds=config.collective_timeout),
            )
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(
                f"cannot join the process group of WORLD_SIZE={world_size} ({first_line(exc)}): launch with torchrun, "
                "or unset WORLD_SIZE and RANK to run a single process"
            ) from None
    if use_cuda:
        torch.cuda.set_device(local_rank)
        return DistInfo(rank, world_size, local_rank, torch.device("cuda", local_rank))
    return DistInfo(rank, world_size, local_rank, torch.device("cpu"))


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (no-op in a single process) and return it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def global_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """This process's share of a mean over every process: ``total * world_size / sum(count)``.

    ``total`` is a local sum of per-item losses, ``count`` the local number of items. DDP averages
    gradients over processes, so it turns these shares into the gradient of the global mean, with
    every item weighted alike however the items are spread (a process without any contributes a
    graph-connected zero). One process: ``total / count`` (0 without items). The count is summed
    on the device (no host synchronisation).
    """
    count = count.detach().to(torch.float32)
    world_size = 1
    if dist.is_available() and dist.is_initialized():
        count = all_reduce_sum(count.clone())
        world_size = dist.get_world_size()
    return total * world_size / count.clamp_min(1.0)


def shutdown() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
