"""Prepared files that cannot train, encoded splits that do not belong to the model scoring them,
and the split format itself: ragged parts found by content, padded when batches are made."""

import shutil

import numpy as np
import pytest

from model_lib.config import EvaluateConfig
from model_lib.errors import DataError
from model_lib.pipeline import Paths, evaluate
from model_lib.prepared import Split, load_prepared, load_split, save_split, split_shape, write_split
from model_lib.text import Vocabulary
from tests.conftest import review_rows


def rewrite_split(path, x=None, y=None):
    """Write the split folder ``path`` again with its padded ids or its labels replaced."""
    split = load_split(path)
    save_split(path, split.padded() if x is None else x, split.labels if y is None else y)


def test_labels_other_than_0_and_1_in_a_split_are_an_error(tiny_prepared):
    y = load_split(tiny_prepared["train"]).labels.copy()
    y[3] = 2
    rewrite_split(tiny_prepared["train"], y=y)
    with pytest.raises(DataError, match=r"train/part-00000\.npz: y: expected labels 0 or 1, got 2 \(row 3\)"):
        load_prepared(**tiny_prepared)


def test_training_split_of_one_class_is_an_error(tiny_prepared):
    rewrite_split(tiny_prepared["train"], y=np.ones(180, np.int8))
    with pytest.raises(DataError, match=r"prepared/train: y: the split holds only label 1 \(180 reviews\); expected both labels"):
        load_prepared(**tiny_prepared)


def test_empty_test_split_is_an_error(tiny_prepared):
    save_split(tiny_prepared["test"], np.zeros((0, 40), np.int32), np.zeros((0,), np.int8))
    with pytest.raises(DataError, match=r"prepared/test: the split is empty; expected encoded reviews"):
        load_prepared(**tiny_prepared)


def test_padded_parts_give_back_exactly_what_the_vocabulary_encodes(tmp_path):
    rows = review_rows(60)
    texts, labels = [t for t, _ in rows], np.asarray([label for _, label in rows], np.int8)
    vocabulary = Vocabulary.fit(texts, max_size=50, min_count=1)
    ids = vocabulary.encode(texts, 12)  # short: many reviews are cut to their last 12 tokens
    save_split(tmp_path / "train", ids, labels, vocabulary=vocabulary, shard_reviews=25)

    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["part-00000.npz", "part-00001.npz", "part-00002.npz"]
    split = load_split(tmp_path / "train")
    np.testing.assert_array_equal(split.padded(), ids)
    np.testing.assert_array_equal(split.padded([5, 0, 59]), ids[[5, 0, 59]])
    np.testing.assert_array_equal(split.take([7, 3]).padded(), ids[[7, 3]])
    assert [list(r) for r in split.rows([2])] == [list(ids[2][ids[2] > 0])]
    assert split_shape(tmp_path / "train") == (60, 12)
    assert split.ids.size == (ids > 0).sum()  # no padding is stored
    with np.load(tmp_path / "train" / "part-00001.npz") as part:  # plain NumPy reads a part
        assert (int(part["part"]), int(part["parts"]), len(part["labels"])) == (1, 3, 25)


def test_parts_are_found_by_content_whatever_their_names_as_a_channel_of_dvc_objects(tmp_path):
    split = Split.from_padded(np.arange(1, 31, dtype=np.int32).reshape(10, 3), np.arange(10) % 2)
    write_split(tmp_path / "written", split, shard_reviews=4)
    channel = tmp_path / "channel"
    for number, part in enumerate(sorted((tmp_path / "written").iterdir())[::-1]):  # names in another order
        (channel / f"{number}f").mkdir(parents=True)
        shutil.copy(part, channel / f"{number}f" / f"c0ffee{number}")
    np.testing.assert_array_equal(load_split(channel).padded(), split.padded())


def test_a_missing_or_repeated_part_or_a_file_of_the_old_format_is_an_error(tmp_path):
    split = Split.from_padded(np.arange(1, 31, dtype=np.int32).reshape(10, 3), np.arange(10) % 2)
    write_split(tmp_path / "train", split, shard_reviews=4)
    shutil.copy(tmp_path / "train" / "part-00001.npz", tmp_path / "copy.npz")
    (tmp_path / "train" / "part-00001.npz").unlink()
    with pytest.raises(DataError, match=r"train: part 1 of 3 is missing"):
        load_split(tmp_path / "train")
    shutil.copy(tmp_path / "copy.npz", tmp_path / "train" / "again.npz")
    shutil.copy(tmp_path / "copy.npz", tmp_path / "train" / "twice.npz")
    with pytest.raises(DataError, match=r"train: part 1 of 3 appears twice"):
        load_split(tmp_path / "train")
    (tmp_path / "train.npz").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"train\.npz: expected an encoded split folder of part files .* got a file"):
        load_split(tmp_path / "train.npz")
    (tmp_path / "train" / "again.npz").write_text("not a part")
    with pytest.raises(DataError, match=r"again\.npz: not a part of an encoded split"):
        load_split(tmp_path / "train")


def test_a_failed_write_leaves_the_split_there_before_whole(tmp_path):
    split = Split.from_padded(np.arange(1, 31, dtype=np.int32).reshape(10, 3), np.arange(10) % 2)
    write_split(tmp_path / "train", split, shard_reviews=4)
    broken = Split(split.ids, split.offsets, split.labels[:3], 3)  # fewer labels than offsets: fails mid-write
    with pytest.raises(IndexError):
        write_split(tmp_path / "train", broken, rows=np.arange(10), shard_reviews=4)
    np.testing.assert_array_equal(load_split(tmp_path / "train").padded(), split.padded())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]  # no temporary folder left


def test_embeddings_holding_nan_are_an_error(tiny_prepared):
    matrix = np.load(tiny_prepared["embeddings"])
    matrix[5, 1] = np.nan
    np.save(tiny_prepared["embeddings"], matrix)
    with pytest.raises(DataError, match=r"embeddings\.npy: row 5: expected finite numbers, got NaN or inf"):
        load_prepared(**tiny_prepared)


def test_training_split_of_only_padding_and_oov_is_an_error(tiny_prepared):
    x = np.minimum(load_split(tiny_prepared["train"]).padded(), 1)
    rewrite_split(tiny_prepared["train"], x=x)
    with pytest.raises(DataError, match=r"prepared/train: x: every id is padding or OOV \(0 or 1\); expected ids of vocabulary"):
        load_prepared(**tiny_prepared)


def test_split_encoded_with_another_vocabulary_than_the_vocabulary_file_is_an_error(tiny_prepared):
    tokens = Vocabulary.load(tiny_prepared["vocab"]).tokens
    swapped = Vocabulary([tokens[1], tokens[0], *tokens[2:]])  # the same size: no other check sees it
    test = load_split(tiny_prepared["test"])
    save_split(tiny_prepared["test"], test.padded(), test.labels, vocabulary=swapped)
    with pytest.raises(DataError, match=r"prepared/test: encoded with another vocabulary than .*prepared/vocab\.txt"):
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
    test = load_split(paths.test)
    positive = test.labels == 1
    save_split(paths.test, test.padded()[positive], test.labels[positive], vocabulary=tiny_training.data.vocabulary)
    (tmp_path / "params.yaml").write_text("evaluate:\n  threshold: 0.5\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--no-mlflow"]) == 0
    out = capsys.readouterr().out
    assert "ROC AUC undefined (one class), predicted in " in out and out.rstrip().endswith("-> reports/")
    assert (tmp_path / "reports" / "roc.csv").read_text() == "fpr,tpr,threshold\n"


def test_a_host_holding_some_parts_loads_them_and_knows_which_and_where_they_go(tmp_path):
    split = Split.from_padded(np.arange(1, 31, dtype=np.int32).reshape(10, 3), np.arange(10) % 2)
    write_split(tmp_path / "whole", split, shard_reviews=4)  # parts of 4, 4 and 2 reviews
    (tmp_path / "share").mkdir()
    for name in ("part-00000.npz", "part-00002.npz"):
        shutil.copy(tmp_path / "whole" / name, tmp_path / "share" / name)
    with pytest.raises(DataError, match=r"share: part 1 of 3 is missing"):
        load_split(tmp_path / "share")
    some = load_split(tmp_path / "share", some_parts=True)
    assert some.held is not None and (some.held.index, some.held.first_row, some.held.rows) == ((0, 2), (0, 8), (4, 2))
    assert (some.held.parts, some.held.split_rows) == (3, 10) and split_shape(tmp_path / "share", some_parts=True) == (10, 3)
    np.testing.assert_array_equal(some.padded(), split.padded([0, 1, 2, 3, 8, 9]))
    whole = load_split(tmp_path / "whole", some_parts=True)  # every part there: a whole split
    assert whole.held is None and whole.part_digests is not None
    assert (some.part_digests[0], some.part_digests[1]) == (whole.part_digests[0], whole.part_digests[2])
    shutil.copy(tmp_path / "whole" / "part-00000.npz", tmp_path / "share" / "again.npz")
    with pytest.raises(DataError, match=r"share: part 0 of 3 appears twice"):
        load_split(tmp_path / "share", some_parts=True)
