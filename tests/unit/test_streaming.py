"""What streams so that a corpus larger than memory goes through: prepare a chunk at a time, the
NB ratios counted a chunk at a time, the vocabulary from a generator, the views on a bounded sample.
Each gives exactly what the whole-corpus computation gives."""

import json

import numpy as np

from model_lib import pipeline
from model_lib.assemble import view_rows
from model_lib.config import PrepareConfig
from model_lib.data import read_reviews_jsonl, split_indices
from model_lib.models import _nb_ratios, nb_log_count_ratios, ngram_matrix
from model_lib.pipeline import Paths
from model_lib.prepared import Split, load_split
from model_lib.text import Vocabulary
from tests.conftest import review_rows


def test_prepare_a_chunk_at_a_time_writes_what_encoding_the_whole_corpus_gives(tmp_path, monkeypatch):
    paths = Paths(reviews=tmp_path / "reviews.jsonl", prepared=tmp_path / "prepared")
    rows = review_rows(90)
    paths.reviews.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows), encoding="utf-8")
    monkeypatch.setattr(pipeline, "_CHUNK", 7)  # chunk boundaries everywhere, none at a part boundary
    glove = str(glove_file(tmp_path))
    config = PrepareConfig(vocab_size=50, min_count=1, max_length=9, glove=glove, embedding_dim=2, shard_reviews=20)
    pipeline.prepare(config, paths)

    reviews = read_reviews_jsonl(paths.reviews)
    train, test = split_indices(reviews, test_size=config.test_size, seed=config.seed)
    vocabulary = Vocabulary.fit([reviews.texts[i] for i in train], max_size=50, min_count=1)
    assert Vocabulary.load(paths.vocab) == vocabulary
    ids = vocabulary.encode(reviews.texts, 9)
    for folder, rows_of in ((paths.train, train), (paths.test, test)):
        split = load_split(folder)
        np.testing.assert_array_equal(split.padded(), ids[rows_of])  # the split's order is the split's
        np.testing.assert_array_equal(split.labels, reviews.labels[rows_of])
    assert len(list(paths.train.iterdir())) == 4  # 72 training reviews, 20 a part


def glove_file(folder):
    path = folder / "glove.6B.2d.txt"
    path.write_text("the 0.1 0.2\nfilm 0.3 0.4\n", encoding="utf-8")
    return path


def test_nb_ratios_counted_a_chunk_at_a_time_equal_those_of_one_sparse_matrix(monkeypatch):
    from model_lib import models

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 12, size=300)
    split = Split(
        rng.integers(2, 40, size=int(lengths.sum())).astype(np.int32),
        np.concatenate([[0], np.cumsum(lengths)]),
        (rng.random(300) < 0.5).astype(np.int8),
        12,
    )
    monkeypatch.setattr(models, "_COUNT_CHUNK", 64)
    streamed = nb_log_count_ratios(split.rows(), split.labels, vocab_size=40, buckets=53, order=3)
    whole = _nb_ratios(ngram_matrix(split.padded(), 40, 53, 3), split.labels, alpha=1.0, min_count=2)
    np.testing.assert_array_equal(streamed, whole)


def test_a_vocabulary_fitted_from_a_generator_in_any_order_is_the_one_of_the_list():
    texts = [t for t, _ in review_rows(50)]
    assert Vocabulary.fit(t for t in reversed(texts)) == Vocabulary.fit(texts)


def test_the_views_take_every_review_up_to_their_bound_then_a_seeded_sorted_sample():
    np.testing.assert_array_equal(view_rows(20000, 20000, seed=42), np.arange(20000))
    sample = view_rows(100000, 20000, seed=42)
    assert len(sample) == len(set(sample)) == 20000 and (np.diff(sample) > 0).all()
    np.testing.assert_array_equal(sample, view_rows(100000, 20000, seed=42))
    assert not np.array_equal(sample, view_rows(100000, 20000, seed=43))
