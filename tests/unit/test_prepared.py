"""Prepared files that cannot train, and encoded splits that do not belong to the model scoring them."""

import numpy as np
import pytest

from model_lib.config import EvaluateConfig
from model_lib.errors import DataError
from model_lib.pipeline import Paths, evaluate
from model_lib.prepared import load_prepared, save_split
from model_lib.text import Vocabulary
from tests.conftest import review_rows


def rewrite_split(path, x=None, y=None):
    with np.load(path) as archive:
        old_x, old_y = archive["x"], archive["y"]
    np.savez(path, x=old_x if x is None else x, y=old_y if y is None else y)


def test_labels_other_than_0_and_1_in_a_split_are_an_error(tiny_prepared):
    with np.load(tiny_prepared["train"]) as archive:
        y = archive["y"].copy()
    y[3] = 2
    rewrite_split(tiny_prepared["train"], y=y)
    with pytest.raises(DataError, match=r"train\.npz: y: expected labels 0 or 1, got 2 \(row 3\)"):
        load_prepared(**tiny_prepared)


def test_training_split_of_one_class_is_an_error(tiny_prepared):
    with np.load(tiny_prepared["train"]) as archive:
        y = np.ones_like(archive["y"])
    rewrite_split(tiny_prepared["train"], y=y)
    with pytest.raises(DataError, match=r"train\.npz: y: the split holds only label 1 \(180 reviews\); expected both labels"):
        load_prepared(**tiny_prepared)


def test_empty_test_split_is_an_error(tiny_prepared):
    save_split(tiny_prepared["test"], np.zeros((0, 40), np.int32), np.zeros((0,), np.int8))
    with pytest.raises(DataError, match=r"test\.npz: the split is empty; expected encoded reviews"):
        load_prepared(**tiny_prepared)


def test_embeddings_holding_nan_are_an_error(tiny_prepared):
    matrix = np.load(tiny_prepared["embeddings"])
    matrix[5, 1] = np.nan
    np.save(tiny_prepared["embeddings"], matrix)
    with pytest.raises(DataError, match=r"embeddings\.npy: row 5: expected finite numbers, got NaN or inf"):
        load_prepared(**tiny_prepared)


def test_training_split_of_only_padding_and_oov_is_an_error(tiny_prepared):
    with np.load(tiny_prepared["train"]) as archive:
        x = np.minimum(archive["x"], 1)
    rewrite_split(tiny_prepared["train"], x=x)
    with pytest.raises(DataError, match=r"train\.npz: x: every id is padding or OOV \(0 or 1\); expected ids of vocabulary"):
        load_prepared(**tiny_prepared)


def test_split_encoded_with_another_vocabulary_than_the_vocabulary_file_is_an_error(tiny_prepared):
    tokens = Vocabulary.load(tiny_prepared["vocab"]).tokens
    swapped = Vocabulary([tokens[1], tokens[0], *tokens[2:]])  # the same size: no other check sees it
    with np.load(tiny_prepared["test"]) as archive:
        save_split(tiny_prepared["test"], archive["x"], archive["y"], vocabulary=swapped)
    with pytest.raises(DataError, match=r"test\.npz: encoded with another vocabulary than .*prepared/vocab\.txt"):
        load_prepared(**tiny_prepared)


def evaluate_folder(tmp_path, tiny_training, vocabulary, max_length=40):
    """Lay out data/prepared and models/ as the evaluate stage reads them, the test split encoded with ``vocabulary``."""
    default = Paths()  # the layout `model-lib evaluate` reads, under tmp_path
    paths = Paths(prepared=tmp_path / default.prepared, models=tmp_path / default.models, reports=tmp_path / default.reports)
    paths.prepared.mkdir(parents=True)
    paths.models.mkdir()
    paths.model.write_bytes(tiny_training.model_file.read_bytes())
    rows = review_rows(240)[180:]
    texts, labels = [t for t, _ in rows], np.asarray([label for _, label in rows], np.int8)
    save_split(paths.test, vocabulary.encode(texts, max_length), labels, vocabulary=vocabulary)
    vocabulary.save(paths.vocab)
    return paths


def test_evaluate_refuses_a_split_of_another_vocabulary_naming_the_first_difference(tmp_path, tiny_training):
    tokens = list(tiny_training.data.vocabulary.tokens)
    tokens[4], tokens[7] = tokens[7], tokens[4]  # the same words, two ids swapped: scores would look plausible
    paths = evaluate_folder(tmp_path, tiny_training, Vocabulary(tokens))
    expected = (
        rf"{paths.test}: encoded with the vocabulary {paths.vocab}, not the one of the model {paths.model}: "
        rf"line 5 is '{tokens[4]}' there, '{tokens[7]}' in the model"
    )
    with pytest.raises(DataError, match=expected):
        evaluate(EvaluateConfig(), paths, track=False)
    assert not paths.reports.exists()


def test_evaluate_refuses_a_split_of_another_length_than_the_model(tmp_path, tiny_training):
    paths = evaluate_folder(tmp_path, tiny_training, tiny_training.data.vocabulary, max_length=30)
    with pytest.raises(DataError, match=rf"{paths.test}: reviews of 30 tokens, but the model {paths.model} takes 40"):
        evaluate(EvaluateConfig(), paths, track=False)


def test_evaluate_scores_a_split_of_the_models_own_vocabulary(tmp_path, tiny_training):
    paths = evaluate_folder(tmp_path, tiny_training, tiny_training.data.vocabulary)
    assert evaluate(EvaluateConfig(), paths, track=False)["accuracy"] >= 0.9


def test_evaluate_command_on_a_split_of_one_class_says_the_auc_is_undefined(tmp_path, tiny_training, monkeypatch, capsys):
    from model_lib.cli import main

    paths = evaluate_folder(tmp_path, tiny_training, tiny_training.data.vocabulary)
    with np.load(paths.test) as archive:
        x, y = archive["x"][archive["y"] == 1], archive["y"][archive["y"] == 1]
    save_split(paths.test, x, y, vocabulary=tiny_training.data.vocabulary)
    (tmp_path / "params.yaml").write_text("evaluate:\n  threshold: 0.5\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--no-mlflow"]) == 0
    out = capsys.readouterr().out
    assert "ROC AUC undefined (one class), predicted in " in out and out.rstrip().endswith("-> reports/")
    assert (tmp_path / "reports" / "roc.csv").read_text() == "fpr,tpr,threshold\n"
