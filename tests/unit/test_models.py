"""Model builders: shapes, the hashed n-gram layer and its NumPy twin, the seed CNN's constraints."""

import numpy as np
import pytest

from model_lib.models import (
    HashedNgrams,
    MaskedSum,
    build_model,
    distinct_ngram_ids,
    fit_tfidf_view,
    nb_log_count_ratios,
    with_tfidf_view,
)


def test_hashed_ngrams_match_their_numpy_twin():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 50, size=(4, 12)).astype(np.int32)
    ids[0, :5] = 0  # front padding
    ids[1, 3] = ids[1, 4] = ids[1, 5] = ids[1, 6] = 7  # repeats count once
    layer = HashedNgrams(vocab_size=50, buckets=97, order=3)
    out = np.asarray(layer(ids))
    for row, expected in zip(out, distinct_ngram_ids(ids, 50, 97, 3)):
        assert sorted(row[row > 0].tolist()) == expected.tolist()


def test_ngram_ids_fall_in_their_order_ranges():
    ids = np.asarray([[0, 3, 4, 5]], np.int32)
    got = distinct_ngram_ids(ids, vocab_size=10, buckets=20, order=3)[0]
    assert sorted(x for x in got if x < 10) == [3, 4, 5]
    assert sum(10 <= x < 30 for x in got) == 2 and sum(30 <= x < 50 for x in got) == 1


def test_nb_ratios_favour_the_class_an_ngram_appears_in():
    ids = np.asarray([[2, 3], [2, 3], [4, 3], [4, 3]], np.int32)
    labels = np.asarray([1, 1, 0, 0])
    ratios = nb_log_count_ratios(ids, labels, vocab_size=5, buckets=11, order=1)
    assert ratios[2] > 0 > ratios[4]
    assert ratios[3] == pytest.approx(0.0, abs=1e-6)  # in every review: no information
    assert ratios[0] == 0.0


@pytest.mark.parametrize("name,length", [("ngram_glove", 30), ("seed_cnn", 1000)])
def test_models_map_id_sequences_to_probabilities(name, length):
    matrix = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    model = build_model(name, matrix, max_length=length, ngram_buckets=64)
    ids = np.random.default_rng(1).integers(0, 20, size=(3, length)).astype(np.int32)
    probabilities = np.asarray(model(ids))
    assert probabilities.shape == (3, 1)
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_seed_cnn_needs_length_1000():
    with pytest.raises(ValueError, match="max_length must be 1000"):
        build_model("seed_cnn", np.zeros((5, 2), np.float32), max_length=500)


def test_unknown_model_name_is_an_error():
    with pytest.raises(ValueError, match="model: expected one of ngram_glove, seed_cnn, got 'bert'"):
        build_model("bert", np.zeros((5, 2), np.float32))


def test_too_many_buckets_is_an_error():
    with pytest.raises(ValueError, match="ngram_buckets: expected 1.."):
        HashedNgrams(vocab_size=10, buckets=2**22)


def test_tfidf_view_inside_keras_scores_as_scikit_learn_does():
    """The ensemble's second model, rebuilt from tables in Keras layers, gives scikit-learn's own
    probabilities for the same l2-normalised idf-weighted binary n-grams."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    ids = rng.integers(2, 30, size=(60, 8)).astype(np.int32)
    ids[:, :2] = 0  # front padding
    labels = (ids[:, -1] % 2).astype(int)
    view = fit_tfidf_view(ids, labels, vocab_size=30, buckets=37, order=2, c=10.0)
    ensemble = with_tfidf_view(
        build_model("ngram_glove", np.zeros((30, 4), np.float32), max_length=8, ngram_buckets=37, ngram_order=2),
        view,
        weight=1.0,
        buckets=37,
        order=2,
    )

    # The same features built independently: each review's distinct n-gram ids as "words".
    documents = [" ".join(f"w{i}" for i in row) for row in distinct_ngram_ids(ids, 30, 37, 2)]
    vectorizer = TfidfVectorizer(token_pattern=r"\S+", lowercase=False, min_df=2, binary=True)
    classifier = LogisticRegression(C=10.0, max_iter=2000).fit(vectorizer.fit_transform(documents), labels)
    expected = classifier.predict_proba(vectorizer.transform(documents))[:, 1]
    np.testing.assert_allclose(np.asarray(ensemble(ids)).reshape(-1), expected, atol=1e-4)


def test_length_reference_scales_short_texts_up_and_leaves_long_ones():
    weights = np.ones((2, 16, 1), np.float32)
    ids = np.zeros((2, 16), np.int32)
    ids[0, -1:] = 5  # one id: scaled by sqrt(4 / 1)
    ids[1, :] = np.arange(1, 17)  # 16 ids, more than the reference: a plain sum
    sums = np.asarray(MaskedSum(reference=4.0, power=0.5)(weights, ids)).reshape(-1)
    np.testing.assert_allclose(sums, [2.0, 16.0])
