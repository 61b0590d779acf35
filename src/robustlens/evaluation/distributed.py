"""Dataset-level work over several processes: the ranks ``torchrun`` starts, one per GPU or core.

The work of a robustness evaluation is independent per image, so the images are split into one
shard per rank, each rank attacks its shard, and rank 0 merges the per-image results. Attacks draw
their randomness from keys derived from each image and the attack's seed (never from a rank or a
batch position), so a sharded run gives the same per-image outcomes as a single process on the same
kind of device.

:func:`group` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), joins the
process group (NCCL on GPUs, gloo on CPUs) and picks the rank's device (``cuda:LOCAL_RANK`` when
there are GPUs). Without torchrun it returns the one-process group, so the same code runs either
way. :func:`shard` splits image indices stratified by class: every rank gets its share of each
class, and the split depends only on the labels and the number of ranks.

Example:
    >>> import torch
    >>> y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    >>> [shard(y, torch.arange(8), rank, 2).tolist() for rank in (0, 1)]
    [[0, 2, 4, 6], [1, 3, 5, 7]]
    >>> group().world
    1
"""

from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from robustlens.errors import ParameterError

__all__ = ["Group", "group", "shard"]

#: How long a rank waits for the others at a collective before giving up. Sections of an audit
#: run on rank 0 alone while the others wait, so this is generous.
TIMEOUT = datetime.timedelta(hours=12)


@dataclass(frozen=True)
class Group:
    """The processes of one job: this process's ``rank`` among ``world``, and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device | None = None

    @property
    def is_main(self) -> bool:
        """Whether this process writes the results (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether there is more than one process."""
        return self.world > 1

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.active:
            torch.distributed.barrier()

    def total(self, value: int) -> int:
        """The sum of ``value`` over the ranks (every rank must call it)."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self._comm_device)
        torch.distributed.all_reduce(t)
        return int(t.item())

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (in rank order); ``None`` on the other ranks."""
        if not self.active:
            return [obj]
        out: list[Any] | None = [None] * self.world if self.is_main else None
        torch.distributed.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        """Leave the process group (call once at the end of the job, on every rank)."""
        if self.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    @property
    def _comm_device(self) -> torch.device:
        backend = torch.distributed.get_backend()
        return self.device if backend == "nccl" and self.device is not None else torch.device("cpu")


def _leave() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def group(backend: str | None = None) -> Group:
    """This process's :class:`Group`: torchrun's ranks, or the single process without torchrun.

    Joins the default process group if torchrun started this process and nobody joined it yet
    (``backend`` defaults to NCCL with GPUs, gloo without). The device is ``cuda:LOCAL_RANK`` when
    GPUs are visible, else the CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local % max(torch.cuda.device_count(), 1)}") if cuda else None
    if device is not None:
        torch.cuda.set_device(device)
    dist = torch.distributed
    if not dist.is_available():
        raise ParameterError("this torch build has no torch.distributed; run one process")
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend or ("nccl" if cuda else "gloo"),
            timeout=TIMEOUT,
            device_id=device,
        )
        # A user's script that passes distributed=True never leaves the group it joined; a group
        # still alive at interpreter exit is torn down in a race with the other ranks (gloo's
        # threads aborted "terminate called without an active exception"): leave it at exit.
        atexit.register(_leave)
    return Group(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, device=device)


def shard(labels: Tensor, pending: Tensor, rank: int, world: int) -> Tensor:
    """The indices among ``pending`` that rank ``rank`` of ``world`` takes, ascending.

    ``pending`` (int64 indices into ``labels``) is ordered by class, then by index, and rank ``r``
    takes every ``world``-th image of that order from position ``r``: each class is split as
    evenly as it can be (shares differ by one image at most), so is the total, and the split is
    a function of the labels, the pending images and ``world`` alone.
    """
    if world < 1 or not 0 <= rank < world:
        raise ParameterError(f"shard: need 0 <= rank < world, got rank={rank}, world={world}")
    pending = pending.to(torch.int64).cpu().sort().values
    if len(pending) == 0:
        return pending
    by_class = pending[torch.argsort(labels.cpu()[pending], stable=True)]
    return by_class[rank::world].sort().values
