"""What the load tests of big files share: a fitted step of random bytes that notes when it
is unpickled, a bit flipped in a file, and a file-system change made at the exact moment a
load opens a file (an ``open`` audit hook: no mocks)."""

from __future__ import annotations

import os
import sys

import numpy as np

from stepline.base import BaseStep

UNPICKLED: list[str] = []  # names of the Bytes steps unpickled so far
ON_OPEN: dict[str, object] = {}  # path -> what to do when a load next opens it (once)


class Bytes(BaseStep):
    """A fitted step holding ``n`` random bytes, the same for the same ``n`` (a buffer file of
    its own from 64 KiB on)."""

    def __init__(self, n=0, name=None):
        super().__init__(hyperparams={"n": n}, name=name)

    def fit(self, data_inputs, expected_outputs=None):
        self.data_ = np.random.default_rng(self.hyperparams["n"]).integers(0, 256, self.hyperparams["n"], np.uint8)
        return self

    def transform(self, data_inputs):
        return data_inputs

    def __setstate__(self, state):
        UNPICKLED.append(state.get("name", "?"))
        self.__dict__.update(state)


def flip(path, offset: int) -> None:
    """Flip one bit of the byte at ``offset`` of the file ``path``, in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))


def _on_open(event, args):
    if event == "open" and ON_OPEN and isinstance(args[0], (str, bytes, os.PathLike)):
        action = ON_OPEN.pop(os.fsdecode(args[0]), None)
        if action is not None:
            action()


sys.addaudithook(_on_open)
