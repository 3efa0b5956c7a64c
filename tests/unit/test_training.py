"""The one training path on tiny data: learning, exact resume, the raw-string model, bad inputs."""

import dataclasses

import keras
import numpy as np
import pytest

from model_lib.config import TrainConfig
from model_lib.errors import DataError
from model_lib.training import load_model, load_prepared, predict, run, save_model

FAST = TrainConfig(epochs=3, batch_size=16, learning_rate=0.01, ngram_buckets=256, patience=5)


@pytest.fixture
def data(tiny_prepared):
    return load_prepared(**tiny_prepared)


def test_default_model_learns_a_separable_task(data):
    result = run(FAST, data, verbose=0)
    probabilities = result.model.predict(data.x_test, verbose=0).reshape(-1)
    assert ((probabilities >= 0.5) == data.y_test).mean() >= 0.9
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(result.history[0])


def test_same_seed_gives_same_weights(data):
    first = run(dataclasses.replace(FAST, epochs=1), data, verbose=0).model.get_weights()
    second = run(dataclasses.replace(FAST, epochs=1), data, verbose=0).model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_resumed_run_ends_exactly_where_an_uninterrupted_one_does(data, tmp_path):
    straight = run(FAST, data, verbose=0)
    # "Interrupt" after epoch 2: a run with epochs=2 leaves its checkpoint; the full run resumes it.
    run(dataclasses.replace(FAST, epochs=2), data, checkpoint_dir=tmp_path / "ckpt", verbose=0)
    state = (tmp_path / "ckpt" / "state.json").read_text()
    (tmp_path / "ckpt" / "state.json").write_text(state.replace('"epochs": 2', '"epochs": 3'))
    resumed = run(FAST, data, checkpoint_dir=tmp_path / "ckpt", verbose=0)
    assert resumed.resumed_from_epoch == 2
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for a, b in zip(straight.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_raw_string_model_reloads_and_predicts_the_same(data, tmp_path):
    result = run(dataclasses.replace(FAST, epochs=1), data, verbose=0)
    texts = ["a wonderful , moving film", "a dull , boring film", "never seen words here"]
    before = predict(result.raw_model, texts)
    save_model(result.raw_model, tmp_path / "model.keras")
    keras.utils.clear_session()
    after = predict(load_model(tmp_path / "model.keras"), texts)
    np.testing.assert_allclose(before, after, rtol=1e-6)
    assert before.shape == (3,)


def test_vocabulary_that_does_not_fit_the_embeddings_is_an_error(tiny_prepared):
    tiny_prepared["vocab"].write_text("only\nthree\nwords\n", encoding="utf-8")
    with pytest.raises(DataError, match="embeddings: .* rows, but the vocabulary has 3 tokens"):
        load_prepared(**tiny_prepared)


def test_empty_training_split_is_an_error(data):
    empty = dataclasses.replace(data, x_train=data.x_train[:0], y_train=data.y_train[:0])
    with pytest.raises(DataError, match="training split is empty"):
        run(FAST, empty, verbose=0)


def test_glove_init_false_changes_the_starting_embedding(data):
    with_glove = run(dataclasses.replace(FAST, epochs=1, learning_rate=1e-9), data, verbose=0)
    without = run(dataclasses.replace(FAST, epochs=1, learning_rate=1e-9, glove_init=False), data, verbose=0)
    glove_rows = with_glove.model.get_layer("glove").get_weights()[0]
    random_rows = without.model.get_layer("glove").get_weights()[0]
    np.testing.assert_allclose(glove_rows, data.embedding_matrix, atol=1e-6)
    assert not np.allclose(random_rows, data.embedding_matrix, atol=1e-3)


def test_training_stops_after_patience_epochs_without_improvement(data):
    # A learning rate this large makes validation loss rise after the first epoch.
    result = run(dataclasses.replace(FAST, epochs=8, learning_rate=50.0, patience=1), data, verbose=0)
    losses = [row["val_loss"] for row in result.history]
    best = losses.index(min(losses))
    assert len(result.history) == best + 2  # one epoch without improvement, then stop
    assert result.best_epoch == best + 1
