"""Hosts that each hold some parts of a split make it whole between them: two hosts, run as two
threads that exchange arrays as JAX's all-gather does, each loading only its share of the parts."""

import shutil
import threading

import numpy as np
import pytest

from model_lib.distributed import Parallelism
from model_lib.errors import DataError
from model_lib.prepared import Split, load_split, write_split
from model_lib.shards import hollowed, padded_everywhere


class Exchange:
    """An all-gather between threads: each passes its array and gets every thread's, stacked."""

    def __init__(self, count: int) -> None:
        self.slots: list = [None] * count
        self.barrier = threading.Barrier(count, timeout=20)

    def gather_for(self, index: int):
        def gather(values: np.ndarray) -> np.ndarray:
            self.slots[index] = np.array(values)
            self.barrier.wait()
            stacked = np.stack(self.slots)
            self.barrier.wait()  # nobody overwrites a slot before all have read them
            return stacked

        return gather


def on_hosts(work, shares: list[list[str]], tmp_path, whole_folder):
    """Run ``work(split, parallel, gather)`` on one thread per share (the part files it holds); return each result."""
    exchange, results = Exchange(len(shares)), [None] * len(shares)

    def host(index: int) -> None:
        folder = tmp_path / f"host{index}"
        folder.mkdir(parents=True)
        for name in shares[index]:
            shutil.copy(whole_folder / name, folder / f"object-{index}-{name}")  # names carry nothing
        try:
            split = load_split(folder, some_parts=True)
            results[index] = work(split, Parallelism(index, len(shares), 1), exchange.gather_for(index))
        except Exception as exc:  # handed to the test
            results[index] = exc
            exchange.barrier.abort()

    threads = [threading.Thread(target=host, args=(i,)) for i in range(len(shares))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.fixture
def whole(tmp_path):
    rng = np.random.default_rng(3)
    x = np.where(rng.random((10, 5)) < 0.3, 0, rng.integers(2, 50, (10, 5))).astype(np.int32)
    split = Split.from_padded(np.sort(x, axis=1), np.arange(10) % 2)  # padding in front, as encoded
    write_split(tmp_path / "whole", split, shard_reviews=4)  # parts of 4, 4 and 2 reviews
    return tmp_path / "whole"


def test_two_hosts_with_disjoint_parts_see_every_label_their_own_ids_and_the_whole_identity(whole, tmp_path):
    one = load_split(whole)
    shares = [["part-00000.npz", "part-00002.npz"], ["part-00001.npz"]]
    hollow = on_hosts(lambda split, parallel, gather: hollowed(split, parallel, "train", gather), shares, tmp_path, whole)
    for host, split in enumerate(hollow):
        assert isinstance(split, Split), split
        np.testing.assert_array_equal(split.labels, one.labels)
        assert split.part_digests == one.part_digests and split.held is None
        np.testing.assert_array_equal(split.owners, [0] * 4 + [1] * 4 + [0] * 2)
        mine = split.owners == host
        np.testing.assert_array_equal(split.padded(np.flatnonzero(mine)), one.padded(np.flatnonzero(mine)))
        assert not split.padded(np.flatnonzero(~mine)).any()  # the other host's rows are empty here

    rows = np.asarray([9, 0, 5, 3])
    padded = on_hosts(
        lambda split, parallel, gather: padded_everywhere(hollowed(split, parallel, "train", gather), rows, parallel, gather),
        shares, tmp_path / "again", whole,
    )  # fmt: skip
    for result in padded:
        np.testing.assert_array_equal(result, one.padded(rows))  # every host, every row, from its owner


def test_a_part_on_no_host_is_named(whole, tmp_path):
    shares = [["part-00000.npz"], ["part-00001.npz"]]
    results = on_hosts(lambda split, parallel, gather: hollowed(split, parallel, "train", gather), shares, tmp_path, whole)
    assert any(isinstance(r, DataError) and "train: part 2 of 3 is on no host" in str(r) for r in results), results


def test_a_part_on_two_hosts_is_owned_by_the_first(whole, tmp_path):
    shares = [["part-00000.npz", "part-00001.npz"], ["part-00001.npz", "part-00002.npz"]]
    results = on_hosts(lambda split, parallel, gather: hollowed(split, parallel, "train", gather), shares, tmp_path, whole)
    for split in results:
        np.testing.assert_array_equal(split.owners, [0] * 8 + [1] * 2)
