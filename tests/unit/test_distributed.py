"""How a global batch is cut into host shards: equal shapes on every process, every row once, and
weights that keep the mean loss of the real rows."""

import numpy as np
import pytest

from model_lib.distributed import Parallelism, host_batch, validation_feed


def shards(batch, processes, devices=1):
    return [host_batch(batch, Parallelism(i, processes, devices)) for i in range(processes)]


def test_one_process_on_one_device_feeds_the_batch_unchanged():
    batch = np.arange(7)
    rows, weights = host_batch(batch, Parallelism())
    assert rows is batch and weights is None


@pytest.mark.parametrize("size,processes,devices", [(16, 2, 1), (15, 2, 1), (3, 2, 1), (1, 2, 1), (16, 3, 2), (7, 1, 2)])
def test_shards_are_equal_cover_the_batch_once_and_keep_the_mean(size, processes, devices):
    batch = np.arange(100, 100 + size)
    cut = shards(batch, processes, devices)
    lengths = {len(rows) for rows, _ in cut}
    assert len(lengths) == 1 and lengths.pop() % devices == 0  # same shape everywhere, divisible by the devices
    rows = np.concatenate([r for r, _ in cut])
    weights = np.concatenate([w if w is not None else np.ones(len(r)) for r, w in cut])
    real = weights > 0
    assert sorted(rows[real]) == list(batch)  # every row of the global batch once, padding at weight 0
    losses = np.random.default_rng(size).random(1000)
    # sum(w * loss) / padded size (Keras' sum_over_batch_size) == the real rows' mean loss
    assert np.isclose((weights * losses[rows - 100]).sum() / len(rows), losses[batch - 100].mean())


def test_validation_is_fed_whole_on_one_device_per_process_and_padded_for_several():
    x, y = np.arange(10).reshape(5, 2), np.arange(5)
    assert validation_feed(x, y, 4, Parallelism(0, 2, 1)) == (x, y, None, 4)
    fed_x, fed_y, weights, size = validation_feed(x, y, 3, Parallelism(0, 1, 2))
    assert size == 4 and len(fed_x) == len(fed_y) == len(weights) == 6
    assert weights.tolist() == pytest.approx([1.2] * 5 + [0])  # 6 rows fed, 5 real
    # Keras: each batch's sum(w * loss) / its rows, then the batches averaged by rows = the real rows' mean
    losses = np.random.default_rng(0).random(6)
    starts = range(0, len(weights), size)
    batch_losses = [(weights[i : i + size] * losses[i : i + size]).sum() / len(weights[i : i + size]) for i in starts]
    tracked = sum(loss * len(weights[i : i + size]) for loss, i in zip(batch_losses, starts)) / len(weights)
    assert tracked == pytest.approx(losses[:5].mean())


def test_several_hosts_on_the_tensorflow_backend_are_refused_naming_the_backend():
    import keras

    from model_lib.distributed import Cluster, start
    from model_lib.errors import ConfigError

    assert keras.backend.backend() == "tensorflow"
    with pytest.raises(
        ConfigError, match="2 hosts: multi-host training needs the JAX backend \\(KERAS_BACKEND=jax\\), got 'tensorflow'"
    ):
        start(Cluster(hosts=("algo-1", "algo-2"), current_host="algo-2"))


@pytest.mark.parametrize(
    "owners,devices",
    [([0, 1, 1, 0, 0, 0, 1, 0], 1), ([1, 1, 1], 1), ([0, 1, 0, 1], 1), ([0, 0, 0, 1, 1], 2)],
)
def test_a_batch_of_sharded_rows_is_cut_by_owner_every_row_once_on_its_host_keeping_the_mean(owners, devices):
    batch, owners = np.arange(len(owners)), np.asarray(owners)
    cut = [host_batch(batch, Parallelism(i, 2, devices), owners) for i in range(2)]
    assert len({len(rows) for rows, _ in cut}) == 1 and len(cut[0][0]) % devices == 0
    for host, (rows, weights) in enumerate(cut):
        real = rows if weights is None else rows[weights > 0]
        assert (owners[real] == host).all()  # each host feeds only rows it holds
    rows = np.concatenate([r for r, _ in cut])
    weights = np.concatenate([w if w is not None else np.ones(len(r)) for r, w in cut])
    assert sorted(rows[weights > 0]) == list(batch)
    losses = np.random.default_rng(len(batch)).random(len(batch))
    assert np.isclose((weights * losses[rows]).sum() / len(rows), losses.mean())
