"""Training on shards: the hosts of a cluster each hold some parts of the train split (a
``ShardedByS3Key`` channel), and none downloads the whole.

Every host must still see the split as one: its row count, every label (the validation split and
each epoch's order are drawn from them) and its identity (the checkpoint fingerprint). So each host
tells the others which parts it holds, and the first host holding a part (its owner) contributes
that part's row count, labels and digest; sums across hosts give every host the same totals.

What results is a *hollow* split: the rows of the whole split, with the labels of all of them but
the ids only of the rows this host owns (every other row is empty), and ``owners`` saying which
process owns each row. A global batch is then cut by owner (:func:`model_lib.distributed.host_batch`):
each host feeds the rows it holds, so the global batch, and with it the gradient, is the one
of a host holding everything, up to the order of the sum.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from model_lib import distributed
from model_lib.errors import DataError
from model_lib.prepared import Split, check_both_labels

_ROWS_AT_A_TIME = 4096  # rows of padded ids summed across hosts at once: bounds the gathered arrays


# Every process's int32 array of the same shape, stacked (processes first), on every process.
Gather = Callable[[np.ndarray], np.ndarray]


def _all_processes(values: np.ndarray) -> np.ndarray:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(values))


def summed(values: np.ndarray, parallel: distributed.Parallelism, gather: Gather = _all_processes) -> np.ndarray:
    """Return the element-wise sum of ``values`` (int32, the same shape on every process) over the processes."""
    if parallel.process_count == 1:
        return values
    gathered = gather(np.ascontiguousarray(values, dtype=np.int32))
    return gathered.sum(axis=0, dtype=np.int64).astype(np.int32)


def hollowed(split: Split, parallel: distributed.Parallelism, where: str = "train", gather: Gather = _all_processes) -> Split:
    """Return ``split`` as the whole split it is some parts of, holding this host's rows (see the module docstring).

    ``split`` is returned as it is when no process holds only some parts (every host read
    everything, or there is one process). Every process must call this at the same point;
    ``gather`` is how they exchange arrays (JAX's, once jax.distributed is up).

    Raises:
        DataError: naming ``where``, if a part of the split is on no host, or the split then holds one class only.
    """
    if parallel.process_count == 1 or not summed(np.asarray([split.held is not None], np.int32), parallel, gather)[0]:
        return split
    if split.held is None:  # this host read the whole split, another only some parts of it
        raise DataError(
            f"{where}: this host holds every part of the split while another holds some; expected every host to "
            "read the channel the same way (all ShardedByS3Key or all FullyReplicated)"
        )
    held, held_digests = split.held, split.part_digests
    assert held_digests is not None  # load_split gives a split of some parts the digest of each
    mine = np.zeros(held.parts, dtype=np.int32)
    mine[list(held.index)] = 1
    holders = gather(mine).reshape(parallel.process_count, held.parts)
    nowhere = np.flatnonzero(holders.sum(axis=0) == 0)
    if len(nowhere):
        raise DataError(
            f"{where}: part {int(nowhere[0])} of {held.parts} is on no host ({len(nowhere)} parts missing); expected "
            "every part of the split on one host at least"
        )
    owner = np.argmax(holders > 0, axis=0)  # the first host holding a part owns it
    owned = [i for i, part in enumerate(held.index) if owner[part] == parallel.process_index]
    rows = np.zeros(held.parts, dtype=np.int32)
    digests = np.zeros(held.parts, dtype=np.int32)
    for i in owned:
        rows[held.index[i]] = held.rows[i]
        digests[held.index[i]] = np.uint32(held_digests[i]).view(np.int32)
    rows, digests = summed(rows, parallel, gather), summed(digests, parallel, gather)
    first_rows = np.concatenate([[0], np.cumsum(rows)[:-1]])
    if int(rows.sum()) != held.split_rows:
        raise DataError(f"{where}: the parts on all hosts hold {int(rows.sum())} reviews, their split {held.split_rows}")

    local_bounds = np.concatenate([[0], np.cumsum(held.rows)])
    labels = np.zeros(held.split_rows, dtype=np.int32)
    lengths = np.zeros(held.split_rows, dtype=np.int64)
    pieces = []
    for i in owned:
        part, a, b = held.index[i], int(local_bounds[i]), int(local_bounds[i + 1])
        if held.first_row[i] != first_rows[part]:
            raise DataError(
                f"{where}: part {part} starts at review {held.first_row[i]}, after {first_rows[part]} in earlier parts"
            )
        into = slice(held.first_row[i], held.first_row[i] + held.rows[i])
        labels[into] = split.labels[a:b]
        lengths[into] = np.diff(split.offsets[a : b + 1])
        pieces.append(split.ids[split.offsets[a] : split.offsets[b]])
    labels = summed(labels, parallel, gather).astype(np.int8)
    check_both_labels(labels, f"{where}: y: the split on all hosts")
    ids = pieces[0] if len(pieces) == 1 else np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    return dataclasses.replace(
        split,
        ids=ids,
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        labels=labels,
        part_digests=tuple(int(d) for d in digests.view(np.uint32)),
        held=None,
        owners=np.repeat(owner, rows).astype(np.int32),
    )


def counts_summer(parallel: distributed.Parallelism) -> Callable[[np.ndarray], np.ndarray]:
    """Return what sums a fitter's counts of a hollow split's rows over the hosts
    (:attr:`model_lib.prepared.SplitRows.across_hosts`).

    The function it returns raises ValueError for counts that are not whole numbers from 0 to 2**31 - 1.
    """

    def across_hosts(counts: np.ndarray) -> np.ndarray:
        whole = np.asarray(counts)
        if whole.size and (whole.max() > np.iinfo(np.int32).max or whole.min() < 0 or (whole != np.round(whole)).any()):
            raise ValueError("across_hosts sums counts: whole numbers from 0 to 2**31 - 1")
        return summed(whole.astype(np.int32), parallel).astype(whole.dtype)

    return across_hosts


def padded_everywhere(
    split: Split, rows: np.ndarray, parallel: distributed.Parallelism, gather: Gather = _all_processes
) -> np.ndarray:
    """Return the reviews ``rows`` of ``split`` padded (as :meth:`Split.padded`), on every process,
    from the hosts that own them; the split's own padding when it is not hollow. Every process
    must call this with the same ``rows``."""
    if split.owners is None:
        return split.padded(rows)
    out = np.empty((len(rows), split.max_length), dtype=np.int32)
    for first in range(0, len(rows), _ROWS_AT_A_TIME):  # a host's rows of others are 0: the sum is the owner's
        chosen = rows[first : first + _ROWS_AT_A_TIME]
        out[first : first + len(chosen)] = summed(split.padded(chosen), parallel, gather)
    return out


__all__ = ["counts_summer", "hollowed", "padded_everywhere", "summed"]
