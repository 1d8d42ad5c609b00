"""The files of sibling steps verified side by side, one step per core, before any is loaded.

A file's BLAKE3 is one chain: however many threads read it, its hash runs on one core at a
time, and a copied dump of a few big steps verified step after step was bound by that chain
(1 GiB in 4 steps, BLAKE3 at 6.4 GB/s a core: 168 ms of hashing alone, 1.6× a warm
``np.load``). Two steps' files verified at once, each read and hashed chunk by chunk on its
own thread, keep both cores on the work: the reads, the page faults of the fresh arrays and
the hashes. What each verified is kept for its load (``preread``), as the trust gate's
verification is; the first failure in the steps' order is the one raised, before any of
them is unpickled.
"""

from __future__ import annotations

import contextvars
import os
from concurrent.futures import ThreadPoolExecutor

from . import hashing
from .integrity import verify_files, workers_for


def verify_side_by_side(steps, verify, read_into, verified: set, preread: dict) -> None:
    """Verify the files of the steps ``[(folder, manifest files)]`` about to be loaded, side
    by side, where two or more not verified yet hold big files; note each folder
    so verified in ``verified`` and what was read for it in ``preread[folder]``
    (see :func:`~stepline.saving.integrity.verify_files`). Others are left to their load."""
    big = [(folder, files) for folder, files in steps if folder not in verified and _big(files)]
    if not verify or len(big) < 2 or (os.cpu_count() or 1) < 2:
        return
    with ThreadPoolExecutor(workers_for(len(big)), thread_name_prefix="stepline-verify-step") as pool:
        futures = [pool.submit(contextvars.copy_context().run, verify_files, folder, files, verify, read_into,
                               False) for folder, files in big]  # (each in a context of its own: the load's options)
        try:
            for (folder, _), future in zip(big, futures):
                preread[folder] = future.result()  # (the first failure in order)
                verified.add(folder)
        finally:
            for future in futures:
                future.cancel()


def _big(files) -> bool:
    """Whether the records ``files`` (not yet checked: anything) claim a big file (read at
    call time: a by-value import would freeze whatever the setting was when first imported)."""
    if not isinstance(files, dict):
        return False
    least = hashing.PARALLEL_READ_MIN_BYTES
    return any(isinstance(r, dict) and type(r.get("size")) is int and r["size"] >= least for r in files.values())
