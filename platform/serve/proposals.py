"""Selective search for the served proposal families (rcnn, fast_rcnn), in worker processes.

Selective search is most of such a request: ~60 ms of ~100 ms for a 128 px image on one core,
on the CPU, and no cheaper per image in a batch. A detector replica therefore hands each
request's search to a pool of `serve.proposal_workers` processes as the request arrives: the
searches of the requests in flight run side by side on the host's cores while the replica's
own thread runs the CNN passes (on a GPU host, while the GPU does). The proposals are the ones
the model would compute itself (`proposals=` of the detection contract), so answers do not
change. Processes, not threads: OpenCV ranks proposals with the C library's process-wide
`rand()`, reseeded before each search (selective_search.py), so threads would take turns.

    ProposalPool(workers)           -> the pool (workers 0: none; the model searches itself)
    pool.serve_models(models)       -> start the workers if one of the models searches
    await pool.proposals(model, px) -> (N, 4) boxes for a model with `.search`, else None
    pool.close()
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Iterable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import torch
from torch import Tensor, nn

from sightline.models.selective_search import SelectiveSearch, one_thread_per_worker

logger = logging.getLogger(__name__)

MAX_RESTARTS = 3  # pools started anew after a worker died, before the replica searches itself


def image_tensor(pixels: np.ndarray) -> Tensor:
    """HxWx3 uint8 -> the 3xHxW float image in [0, 1] the detection contract takes."""
    # A copy: arrays arriving through Ray's object store are read-only.
    return torch.tensor(pixels, dtype=torch.float32).permute(2, 0, 1).div_(255.0)


def search_pixels(search: SelectiveSearch, pixels: np.ndarray) -> np.ndarray:
    """One image's proposals, as the model would find them on `image_tensor(pixels)`."""
    return search(image_tensor(pixels)).numpy()


def _ready() -> None:
    pass


class ProposalPool:
    """Up to `workers` processes running selective search for a replica (module docstring).

    They start with the first model that searches (`serve_models`), so a replica serving
    only other families starts none."""

    def __init__(self, workers: int) -> None:
        if workers < 0:
            raise ValueError(f"serve.proposal_workers must be >= 0, got {workers}")
        self.workers = workers
        self._executor: Executor | None = None
        self._broken = 0  # pools that broke so far

    def serve_models(self, models: Iterable[nn.Module]) -> None:
        """Start the workers now if one of `models` searches (each worker imports torch:
        seconds), rather than during the first requests for it."""
        if self.workers and self._executor is None and any(map(search_of, models)):
            self._executor = self._start()

    def _start(self) -> Executor:
        # spawn: a replica's process runs Ray's threads, which a forked child would inherit
        # half-initialised.
        executor = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=one_thread_per_worker,
        )
        # A spawned pool starts a process per task it cannot hand to an idle one: this starts
        # them all.
        for _ in range(self.workers):
            executor.submit(_ready)
        return executor

    async def proposals(self, model: nn.Module, pixels: np.ndarray) -> Tensor | None:
        """`model`'s proposals for `pixels` from a worker; None when the model takes none
        (it has no selective `search`) or the pool is off (workers 0)."""
        search = search_of(model)
        if search is None or not self.workers:
            return None
        if self._executor is None:
            self._executor = self._start()
        loop = asyncio.get_running_loop()
        try:
            boxes = await loop.run_in_executor(self._executor, search_pixels, search, pixels)
        except BrokenProcessPool:
            boxes = search_pixels(search, pixels)  # this request searches here
            self._restart()
        return torch.from_numpy(boxes)

    def _restart(self) -> None:
        """After a worker died (killed, out of memory): a fresh pool, unless pools keep
        breaking (workers that cannot start), then none: the replica searches itself."""
        self.close()
        self._broken += 1
        if self._broken > MAX_RESTARTS:
            logger.error(
                "selective-search workers broke %d times; searching in the replica from now on",
                self._broken,
            )
            self.workers = 0
            return
        logger.warning("a selective-search worker died; starting a new pool")
        self._executor = self._start()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def search_of(model: nn.Module) -> SelectiveSearch | None:
    """The model's selective-search settings, if it searches for its own proposals."""
    search = getattr(model, "search", None)
    return search if isinstance(search, SelectiveSearch) else None
