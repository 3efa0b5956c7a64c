"""The arrays of a checkpoint generation on disk: large mostly-zero arrays stored sparse, read back
bit for bit; a generation whose sparse entries do not fit together is skipped, not resumed."""

import logging

import numpy as np

from model_lib import checkpoints


def bits(array: np.ndarray) -> np.ndarray:
    return array.view(f"u{array.dtype.itemsize}")


def test_a_mostly_zero_table_is_stored_sparse_and_read_back_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    table = np.zeros((300_000, 1), np.float32)  # an n-gram table: most rows never train
    rows = rng.choice(len(table), size=60_000, replace=False)
    table[rows, 0] = rng.normal(size=len(rows)).astype(np.float32)
    table[rows[:10], 0] = -0.0  # equal to 0.0, but another bit pattern: kept
    table[rows[10:20], 0] = np.nan
    dense = rng.normal(size=(30_000, 50)).astype(np.float32)  # GloVe rows: all in use, stored as they are
    small = np.zeros(10, np.int64)
    arrays = {"model": [table, dense, small], "optimizer": [np.zeros_like(table)], "metrics": []}
    folder = checkpoints.save(tmp_path, {"epoch": 0, "step": 3}, arrays, best=[table])
    entries = set(np.load(folder / checkpoints.ARRAYS).files)
    assert {"model/00000:mask", "model/00000:values", "model/00001", "model/00002", "optimizer/00000:mask"} <= entries
    assert (folder / checkpoints.ARRAYS).stat().st_size < table.nbytes / 3 + dense.nbytes + 100_000
    back = checkpoints.latest(tmp_path)
    for saved, read in zip(
        [table, dense, small, np.zeros_like(table), table],
        [*back.arrays["model"], *back.arrays["optimizer"], *back.arrays["best"]],
    ):
        assert read.dtype == saved.dtype and read.shape == saved.shape
        np.testing.assert_array_equal(bits(read), bits(saved))


def test_a_generation_whose_sparse_entries_disagree_is_skipped_for_the_one_before(tmp_path, caplog):
    table = np.zeros(100_000, np.float32)
    table[::7] = 1.5
    checkpoints.save(tmp_path, {"epoch": 0, "step": 1}, {"model": [table]})
    newest = checkpoints.save(tmp_path, {"epoch": 0, "step": 2}, {"model": [table]})
    with np.load(newest / checkpoints.ARRAYS) as archive:
        entries = {name: archive[name] for name in archive.files}
    entries["model/00000:values"] = entries["model/00000:values"][:-1]  # one value short of the mask
    with (newest / checkpoints.ARRAYS).open("wb") as handle:
        np.savez(handle, **entries)
    state = (newest / checkpoints.STATE).read_text()
    size, crc = (newest / checkpoints.ARRAYS).stat().st_size, checkpoints._crc32(newest / checkpoints.ARRAYS)
    import json

    full = json.loads(state)
    full["files"][checkpoints.ARRAYS] = {"size": size, "crc32": crc}  # a writer's bug, not a torn file
    (newest / checkpoints.STATE).write_text(json.dumps(full))
    with caplog.at_level(logging.WARNING):
        back = checkpoints.latest(tmp_path)
    assert back.state["step"] == 1
    assert f"checkpoint {newest} skipped: model/00000: " in caplog.text
