"""``stepline.saving.pagecache``: whether deleting a file would wait for the disk.

A save frees the data the last one replaced on its own thread only where the kernel says
none of it is being written back; anything it cannot tell about counts as "would wait".
"""
import os

import pytest

from stepline.saving import pagecache


def _folder(tmp_path):
    return os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)


def _known():
    fd = os.open(__file__, os.O_RDONLY)
    try:
        return pagecache.pages_being_written_back(fd) is not None
    finally:
        os.close(fd)


def test_a_file_only_written_to_the_page_cache_is_freed_without_waiting(tmp_path):
    if not _known():
        pytest.skip("this kernel has no cachestat (Linux 6.5 and later)")
    (tmp_path / "data").write_bytes(os.urandom(1 << 20))
    fd = _folder(tmp_path)
    try:
        assert pagecache.freed_without_waiting(fd, "data")
        os.sync()  # written back and done: clean pages
        assert pagecache.freed_without_waiting(fd, "data")
    finally:
        os.close(fd)


@pytest.mark.parametrize("what", ["missing", "fifo", "link", "folder"])
def test_what_is_not_a_plain_file_counts_as_waiting(tmp_path, what):
    target = tmp_path / "x"
    if what == "fifo":
        os.mkfifo(target)  # (opened without blocking: no writer needed, no hang)
    elif what == "link":
        (tmp_path / "real").write_bytes(b"x")
        target.symlink_to(tmp_path / "real")
    elif what == "folder":
        target.mkdir()
    fd = _folder(tmp_path)
    try:
        assert pagecache.freed_without_waiting(fd, "x") is False
    finally:
        os.close(fd)


def test_where_the_kernel_cannot_tell_the_answer_is_waiting(tmp_path, monkeypatch):
    (tmp_path / "data").write_bytes(b"x" * 4096)
    monkeypatch.setattr(pagecache, "_syscall", None)  # (as on macOS, Windows, Linux before 6.5)
    fd = _folder(tmp_path)
    try:
        assert pagecache.pages_being_written_back(fd) is None
        assert pagecache.freed_without_waiting(fd, "data") is False
    finally:
        os.close(fd)
