"""The one training path on tiny data: learning, exact resume after a real signal, the raw-string
model, bad inputs."""

import dataclasses
import json
import logging
import os
import signal
import threading
import time

import keras
import numpy as np
import pytest

from model_lib import checkpoints, locking
from model_lib.config import TrainConfig
from model_lib.errors import ConfigError, DataError, FolderLockError, TrainingInterrupted
from model_lib.inference import load_model, predict
from model_lib.prepared import load_prepared
from model_lib.training import TrainingState, effective_hyperparameters, run
from tests.conftest import TINY_TRAINING
from tests.unit.test_locking import start_holder

FAST = TrainConfig(**TINY_TRAINING)  # what the shared tiny_training ran


class SignalAfterEpoch:
    """An epoch logger that sends this process a real signal after epoch ``epoch`` (0-based) is logged."""

    def __init__(self, epoch: int, signum: int = signal.SIGTERM) -> None:
        self.epoch, self.signum, self.epochs = epoch, signum, []

    def log_epoch(self, epoch, metrics):
        self.epochs.append(epoch)
        if epoch == self.epoch:
            os.kill(os.getpid(), self.signum)

    def log_history(self, history):
        self.resumed_history = history


def weights_equal(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture
def data(tiny_prepared):
    return load_prepared(**tiny_prepared)


def test_default_model_learns_a_separable_task(tiny_training):
    result, data = tiny_training.result, tiny_training.data
    probabilities = result.model.predict(data.x_test, verbose=0).reshape(-1)
    assert ((probabilities >= 0.5) == data.y_test).mean() >= 0.9
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(result.history[0])


@pytest.mark.slow
def test_same_seed_gives_same_weights(data, tiny_training):
    again = run(FAST, data, verbose=0)
    assert weights_equal(tiny_training.result.model.get_weights(), again.model.get_weights())


@pytest.mark.slow
def test_run_stopped_by_sigterm_resumes_to_bitwise_the_same_weights(data, tmp_path, tiny_training):
    straight = tiny_training.result  # the same config and data, never stopped
    with pytest.raises(TrainingInterrupted, match="SIGTERM") as stopped:
        run(FAST, data, checkpoint_dir=tmp_path / "ckpt", tracker=SignalAfterEpoch(0), verbose=0)
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    logger = SignalAfterEpoch(epoch=-1)
    resumed = run(FAST, data, checkpoint_dir=tmp_path / "ckpt", tracker=logger, verbose=0)
    assert resumed.resumed_from == (1, 0)
    assert [row["epoch"] for row in logger.resumed_history] == [1]
    assert logger.epochs == [1, 2]  # epoch 0 is not trained (or logged) twice
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    assert resumed.history == straight.history
    assert weights_equal(straight.model.get_weights(), resumed.model.get_weights())


@pytest.mark.slow
def test_ctrl_c_stops_with_the_state_saved(data, tmp_path):
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the suite runs as a background job
    with pytest.raises(TrainingInterrupted, match="SIGINT") as stopped:
        run(FAST, data, checkpoint_dir=tmp_path / "ckpt", tracker=SignalAfterEpoch(1, signal.SIGINT), verbose=0)
    assert stopped.value.exit_code == 130
    assert checkpoints.latest(tmp_path / "ckpt").state["epoch"] == 2
    assert signal.getsignal(signal.SIGINT) is before  # handlers are put back


@pytest.mark.slow
def test_truncated_newest_checkpoint_is_skipped_with_a_warning(data, tmp_path, caplog, tiny_training):
    straight = tiny_training.result  # checkpoint_steps changes how the run is carried out, not its result
    config = dataclasses.replace(FAST, checkpoint_steps=4)
    with pytest.raises(TrainingInterrupted):
        run(config, data, checkpoint_dir=tmp_path / "ckpt", tracker=SignalAfterEpoch(1), verbose=0)
    newest = tmp_path / "ckpt" / f"gen-{checkpoints.generation_numbers(tmp_path / 'ckpt')[0]:06d}"
    arrays = newest / checkpoints.ARRAYS
    arrays.write_bytes(arrays.read_bytes()[: arrays.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        resumed = run(config, data, checkpoint_dir=tmp_path / "ckpt", verbose=0)
    assert f"checkpoint {newest} skipped" in caplog.text and "truncated" in caplog.text
    assert resumed.resumed_from == (1, 8)  # the generation before: mid-epoch 2, after 8 of 12 steps
    assert weights_equal(straight.model.get_weights(), resumed.model.get_weights())
    # Epoch 2's training metrics are over all its 12 steps, the 8 before the resume included.
    assert resumed.history == straight.history


class SignalMidEpoch2:
    """An epoch logger that, once epoch 1 ends, sends this process SIGTERM (from a thread) as soon as
    a generation of epoch 2 is on disk: the run stops a step or two into epoch 2."""

    def __init__(self, directory):
        self.directory = directory

    def log_epoch(self, epoch, metrics):
        if epoch == 0:
            threading.Thread(target=self._signal_in_epoch_2, daemon=True).start()

    def _signal_in_epoch_2(self):
        while True:
            newest = checkpoints.latest(self.directory)
            if newest is not None and newest.state["epoch"] == 1 and newest.state["step"] >= 1:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.002)

    def log_history(self, history):
        pass


@pytest.mark.slow
def test_truncated_best_weights_of_the_newest_checkpoint_leave_the_one_before_whole(data, tmp_path, caplog, tiny_training):
    # Stopped in epoch 2, saving each step: both generations kept hold epoch 1's best weights, each
    # in a file of its own (with a hard link between them, one truncation spoils both).
    config = dataclasses.replace(FAST, checkpoint_steps=1)
    folder = tmp_path / "ckpt"
    with pytest.raises(TrainingInterrupted):
        run(config, data, checkpoint_dir=folder, tracker=SignalMidEpoch2(folder), verbose=0)
    older, newest = (folder / f"gen-{n:06d}" for n in sorted(checkpoints.generation_numbers(folder)))
    kept = [json.loads((g / checkpoints.STATE).read_text()) for g in (older, newest)]
    assert [(s["epoch"], s["step"] > 0) for s in kept] == [(1, True), (1, True)]  # both in epoch 2
    best = newest / checkpoints.BEST
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        resumed = run(config, data, checkpoint_dir=folder, verbose=0)
    assert f"checkpoint {newest} skipped: {checkpoints.BEST} has" in caplog.text and "truncated" in caplog.text
    assert resumed.resumed_from == (1, kept[0]["step"])  # the generation before, not a fresh start
    assert weights_equal(tiny_training.result.model.get_weights(), resumed.model.get_weights())


def test_the_library_door_refuses_a_checkpoint_folder_another_process_trains_with(data, tmp_path):
    lock = tmp_path / "ckpt" / locking.TRAINING_LOCK
    other = start_holder(lock)  # a real process, as a second `model_lib.train` of the folder would be
    try:
        with pytest.raises(FolderLockError, match=f"got pid {other.pid} on host "):
            run(FAST, data, checkpoint_dir=tmp_path / "ckpt", verbose=0)
    finally:
        other.kill()
        other.wait()
    assert checkpoints.generation_numbers(tmp_path / "ckpt") == []  # refused before training


@pytest.mark.slow
def test_checkpoint_of_other_hyperparameters_is_not_resumed(data, tmp_path, caplog):
    with pytest.raises(TrainingInterrupted):
        run(FAST, data, checkpoint_dir=tmp_path / "ckpt", tracker=SignalAfterEpoch(0), verbose=0)
    other = dataclasses.replace(FAST, learning_rate=0.02, dropout=0.1, checkpoint_steps=7)
    with caplog.at_level(logging.WARNING):
        result = run(other, data, checkpoint_dir=tmp_path / "ckpt", verbose=0)
    assert result.resumed_from is None
    assert "(dropout, learning_rate differ); starting afresh" in caplog.text


def test_raw_string_model_reloads_and_predicts_the_same(tiny_training):
    texts = ["a wonderful , moving film", "a dull , boring film", "never seen words here"]
    before = predict(tiny_training.result.raw_model, texts)
    after = predict(load_model(tiny_training.model_file), texts)
    np.testing.assert_allclose(before, after, rtol=1e-6)
    assert before.shape == (3,)


def test_saving_the_same_model_twice_gives_the_same_bytes(tiny_training, tmp_path):
    # Keras writes the clock into the archive (a zip entry's time has 2 s steps): a rerun of the
    # same training must give dvc.lock the same md5 all the same.
    from model_lib.export import save_model

    save_model(tiny_training.result.raw_model, tmp_path / "first.keras")
    time.sleep(2.1)
    save_model(tiny_training.result.raw_model, tmp_path / "second.keras")
    assert (tmp_path / "first.keras").read_bytes() == (tmp_path / "second.keras").read_bytes()
    texts = ["a wonderful , moving film", "a dull , boring film"]
    np.testing.assert_array_equal(
        predict(load_model(tmp_path / "second.keras"), texts), predict(tiny_training.result.raw_model, texts)
    )


def test_prediction_of_an_empty_review_is_an_error(tiny_training):
    # Padding alone scores as the model's bias: a plausible probability about nothing.
    with pytest.raises(DataError, match=r"review 2: expected some words, got ' '"):
        predict(tiny_training.result.raw_model, ["a wonderful film", " "])


def test_vocabulary_that_does_not_fit_the_embeddings_is_an_error(tiny_prepared):
    tiny_prepared["vocab"].write_text("only\nthree\nwords\n", encoding="utf-8")
    with pytest.raises(DataError, match="embeddings: .* rows, but the vocabulary has 3 tokens"):
        load_prepared(**tiny_prepared)


def test_view_weights_adding_up_to_more_than_1_are_an_error():
    assert effective_hyperparameters(TrainConfig(nb_view_weight=0.5, nb_crop_view_weight=0.5))["nb_view_weight"] == 0.5
    expected = r"train.nb_view_weight \+ train.nb_crop_view_weight: expected a sum <= 1, got 0.9 \+ 0.2"
    with pytest.raises(ConfigError, match=expected):
        effective_hyperparameters(TrainConfig(nb_view_weight=0.9))


def test_empty_training_split_is_an_error(data):
    empty = dataclasses.replace(data, train=data.train.take([]))
    with pytest.raises(DataError, match="training split is empty"):
        run(FAST, empty, verbose=0)


@pytest.mark.slow
def test_glove_init_false_changes_the_starting_embedding(data):
    # The trained model itself, no ensemble.
    start = dataclasses.replace(FAST, epochs=1, learning_rate=1e-9, nb_view_weight=0.0, nb_crop_view_weight=0.0)
    with_glove = run(start, data, verbose=0)
    without = run(dataclasses.replace(start, glove_init=False), data, verbose=0)
    glove_rows = with_glove.model.get_layer("glove").get_weights()[0]
    random_rows = without.model.get_layer("glove").get_weights()[0]
    np.testing.assert_allclose(glove_rows, data.embedding_matrix, atol=1e-6)
    assert not np.allclose(random_rows, data.embedding_matrix, atol=1e-3)


@pytest.mark.slow
def test_training_stops_after_patience_epochs_without_improvement(data):
    # A learning rate this large makes validation loss rise after the first epoch.
    result = run(dataclasses.replace(FAST, epochs=8, learning_rate=50.0, patience=1), data, verbose=0)
    losses = [row["val_loss"] for row in result.history]
    best = losses.index(min(losses))
    assert len(result.history) == best + 2  # one epoch without improvement, then stop
    assert result.best_epoch == best + 1


def test_crops_are_windows_of_their_review_padded_in_front():
    from model_lib.augment import CROP_TOKENS
    from model_lib.augment import cropped as _cropped

    x = np.zeros((200, 120), np.int32)
    for i, length in enumerate(np.random.default_rng(0).integers(1, 120, size=200)):
        x[i, -length:] = np.arange(2, 2 + length)  # distinct ids, so a window has one place
    cropped = _cropped(x, 0.5, np.random.default_rng([42, 0, 0]))
    changed = 0
    for before, after in zip(x, cropped):
        tokens, window = before[before > 0], after[after > 0]
        assert (after[: len(after) - len(window)] == 0).all()  # padding only in front
        start = int(np.flatnonzero(tokens == window[0])[0])
        assert (tokens[start : start + len(window)] == window).all()  # a contiguous window of its own review
        if len(window) < len(tokens):
            changed += 1
            assert min(CROP_TOKENS[0], len(tokens)) <= len(window) <= CROP_TOKENS[1]
    assert 60 <= changed <= 100  # about half the rows, most of them long enough to be shortened
    assert np.array_equal(_cropped(x, 0.5, np.random.default_rng([42, 0, 0])), cropped)  # (seed, epoch, step) decide
    assert _cropped(x, 0.0, np.random.default_rng(0)) is x


def test_the_ensemble_scores_the_same_in_memory_and_reloaded(tiny_training):
    """The default model is an ensemble holding the trained model: scoring it in memory must not
    fall back to that inner model (a raw-string model is recognised by its string input only)."""
    from model_lib.inference import predict_encoded

    result, data = tiny_training.result, tiny_training.data
    in_memory = predict_encoded(result.model, data.x_test)
    reloaded = predict_encoded(load_model(tiny_training.model_file), data.x_test)
    np.testing.assert_allclose(in_memory, reloaded, atol=1e-6)
    assert result.model.get_layer("ensemble_p_positive").mix == [0.4, 0.2]  # the default is the ensemble of both views
    assert {"view1_logit", "view2_logit"} <= {layer.name for layer in result.model.layers}


@pytest.mark.slow
def test_epoch_training_metrics_are_over_every_batch_not_the_last(data, monkeypatch):
    """Keras 3's train_on_batch resets the metrics before each batch: the epoch's loss and accuracy
    must be the row-weighted means of its batches', and its AUC the AUC of all its predictions."""
    batches = []
    train_on_batch = keras.Model.train_on_batch

    def recording(model, x, y=None, sample_weight=None, **kwargs):
        predictions = np.asarray(model(x, training=False)).reshape(-1)  # no dropout: the train step's own
        returned = train_on_batch(model, x, y, sample_weight=sample_weight, **kwargs)
        batches.append((len(x), model.get_metrics_result(), y, predictions))
        return returned

    monkeypatch.setattr(keras.Model, "train_on_batch", recording)
    result = run(dataclasses.replace(FAST, epochs=2, dropout=0.0), data, verbose=0)
    steps = len(batches) // 2
    for row, epoch in zip(result.history, (batches[:steps], batches[steps:])):
        rows = np.asarray([n for n, *_ in epoch], dtype=float)
        for name in ("loss", "accuracy"):
            batch_values = np.asarray([float(logs[name]) for _, logs, *_ in epoch])
            assert row[name] == pytest.approx((rows * batch_values).sum() / rows.sum(), rel=1e-5)
        assert row["loss"] != pytest.approx(float(epoch[-1][1]["loss"]), rel=1e-3)  # not what Keras returned last
        auc = keras.metrics.AUC()
        auc.update_state(np.concatenate([y for *_, y, _ in epoch]), np.concatenate([p for *_, p in epoch]))
        assert row["auc"] == pytest.approx(float(auc.result()), abs=1e-3)


def test_training_state_round_trips_and_reads_checkpoints_written_before_epoch_sums():
    saved_before = {"epoch": 2, "step": 5, "history": [{"epoch": 1, "loss": 0.5}], "best_val_loss": 0.4, "best_epoch": 0,
                    "wait": 1, "fingerprint": {"seed": 42}, "run_id": None, "steps_per_epoch": 12}  # fmt: skip
    state = TrainingState.from_json(saved_before)
    assert (state.epoch, state.step, state.history, state.best_val_loss, state.best_epoch, state.wait) == (
        2, 5, [{"epoch": 1, "loss": 0.5}], 0.4, 0, 1,
    )  # fmt: skip
    assert state.epoch_sums == []
    state.epoch_sums = [np.asarray([1.5, 2.0]), np.asarray([1e-17])]
    written = json.loads(json.dumps(state.to_json()))
    assert {"epoch", "step", "history", "best_val_loss", "best_epoch", "wait"} <= set(written)  # the keys as before
    again = TrainingState.from_json(written)
    assert [s.tolist() for s in again.epoch_sums] == [[1.5, 2.0], [1e-17]]
    assert dataclasses.replace(again, epoch_sums=[]) == dataclasses.replace(state, epoch_sums=[])


@pytest.mark.slow
def test_loss_that_becomes_nan_stops_the_run_with_a_clear_error(data, tmp_path):
    from model_lib.errors import ModelLibError

    # Adam's steps are about learning_rate long: after the first one the weights are huge, then inf.
    diverging = dataclasses.replace(FAST, learning_rate=1e30)
    with pytest.raises(ModelLibError, match=r"train: loss is nan at epoch 1, step [2-9]\d*; expected a finite loss") as caught:
        run(diverging, data, checkpoint_dir=tmp_path / "ckpt", verbose=0)
    assert "learning_rate" in str(caught.value)


def test_a_run_logging_to_a_file_says_how_far_each_epoch_is(data, caplog, monkeypatch):
    from model_lib import training

    monkeypatch.setattr(training, "PROGRESS_SECONDS", 0.0)  # a line after every step instead of every minute
    with caplog.at_level(logging.INFO, logger="model_lib.training"):
        run(dataclasses.replace(FAST, epochs=1), data, verbose=2)
    steps = -(-round(180 * 0.9) // FAST.batch_size)
    assert f"epoch 1/1: step 1 of {steps}: accuracy " in caplog.text and f"step {steps - 1} of {steps}" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("seconds", "steps", "saved"),
    [
        (0.0, 0, lambda steps: 3),  # by steps alone, steps off: each of the 3 epoch ends
        (3600.0, 0, lambda steps: 1),  # by time, none due in a run of seconds: only the end
        (1e-9, 0, lambda steps: 3 * steps),  # by time, always due: after every step, the epoch ends among them
    ],
    ids=["epoch-ends", "time-never-due", "time-always-due"],  # by steps with time: the truncation tests above
)
def test_generations_are_saved_by_time_by_steps_and_at_the_end(data, tmp_path, seconds, steps, saved, tiny_training):
    config = dataclasses.replace(FAST, checkpoint_seconds=seconds, checkpoint_steps=steps)
    result = run(config, data, checkpoint_dir=tmp_path / "ckpt", verbose=0)
    newest = checkpoints.latest(tmp_path / "ckpt")
    assert result.checkpoints_saved == saved(newest.state["steps_per_epoch"])
    assert (newest.state["epoch"], newest.state["step"]) == (3, 0)  # the end of training, whatever the cadence
    assert weights_equal(tiny_training.result.model.get_weights(), result.model.get_weights())
