"""Weight files read in turns (common/read_order.py)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import common.files as common_files
from common.read_order import ReadOrder, ReadsCancelled

pytestmark = pytest.mark.timeout(30)  # a turn never passed on hangs the threads after it

FILES = [Path("dit"), Path("umt5"), Path("clip"), Path("vae")]


class Disk:
    """Records which reads ran and how many at once."""

    def __init__(self):
        self.order: list[Path] = []
        self.busy = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def read(self, reads: ReadOrder, path: Path) -> Path:
        with reads.turn(path):
            with self._lock:
                self.order.append(path)
                self.busy += 1
                self.most_at_once = max(self.most_at_once, self.busy)
            time.sleep(0.01)
            with self._lock:
                self.busy -= 1
        return path


def test_reads_go_in_the_given_order_whatever_order_the_threads_start_in():
    reads, disk = ReadOrder(FILES), Disk()
    with ThreadPoolExecutor(len(FILES)) as pool:
        futures = [pool.submit(disk.read, reads, path) for path in reversed(FILES)]
        assert [f.result(timeout=10) for f in futures] == list(reversed(FILES))
    assert disk.order == FILES


def test_only_one_file_is_read_at_a_time():
    reads, disk = ReadOrder(FILES), Disk()
    with ThreadPoolExecutor(len(FILES)) as pool:
        list(pool.map(disk.read, [reads] * len(FILES), FILES, timeout=10))
    assert disk.most_at_once == 1


def test_a_file_not_in_the_order_reads_at_once():
    reads = ReadOrder(FILES)
    with reads.turn(Path("tokenizer.json")):  # the DiT has not been read, yet this goes
        pass


def test_a_load_that_fails_before_its_read_passes_its_turn_on():
    reads, disk = ReadOrder(FILES), Disk()

    def broken_dit_load():
        raise ValueError("bad header")

    with ThreadPoolExecutor(len(FILES)) as pool:
        failed = pool.submit(reads.run, FILES[0], broken_dit_load)
        rest = [pool.submit(reads.run, path, disk.read, reads, path) for path in FILES[1:]]
        assert [f.result(timeout=10) for f in rest] == FILES[1:]
        with pytest.raises(ValueError, match="bad header"):
            failed.result()
    assert disk.order == FILES[1:]


def test_a_read_that_fails_passes_its_turn_on():
    reads, disk = ReadOrder(FILES[:2]), Disk()

    def failing_read():
        with reads.turn(FILES[0]):
            raise OSError("I/O error")

    with ThreadPoolExecutor(2) as pool:
        second = pool.submit(disk.read, reads, FILES[1])
        with pytest.raises(OSError):
            pool.submit(failing_read).result(timeout=10)
        assert second.result(timeout=10) == FILES[1]


def test_a_file_read_again_after_its_turn_reads_at_once():
    reads = ReadOrder(FILES)
    with reads.turn(FILES[0]):
        pass
    with reads.turn(FILES[0]):  # e.g. torch.load's fallback read; the umT5 file is next in turn
        pass


def test_cancelling_wakes_the_reads_still_waiting_for_their_turn():
    reads = ReadOrder(FILES)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(Disk().read, reads, FILES[1])  # waits for the DiT, which never comes
        time.sleep(0.05)
        reads.cancel()
        with pytest.raises(ReadsCancelled):
            waiting.result(timeout=10)


def test_a_read_under_way_stops_at_its_next_chunk_once_cancelled(monkeypatch):
    monkeypatch.setattr(common_files, "_READ_CHUNK", 1024)
    reads = ReadOrder()

    class CancellingFile:
        chunks = 0

        def readinto(self, view) -> int:
            self.chunks += 1
            reads.cancel()  # as when another file's check fails meanwhile
            return len(view)

    file = CancellingFile()
    with pytest.raises(ReadsCancelled):
        common_files._read_into(file, Path("dit"), np.empty(64 * 1024, dtype=np.uint8), reads)
    assert file.chunks == 1
