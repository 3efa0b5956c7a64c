"""Model builders: shapes, the hashed n-gram layer and its NumPy twin, the seed CNN's constraints."""

import numpy as np
import pytest

from model_lib.models import (
    HashedNgrams,
    MaskedSum,
    build_model,
    distinct_ngram_ids,
    fit_nb_view,
    nb_log_count_ratios,
    ngram_matrix,
    with_views,
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


def small_texts(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, 30, size=(60, 8)).astype(np.int32)
    ids[:, :2] = 0  # front padding
    return ids, (ids[:, -1] % 2).astype(int)


def nbsvm_probabilities(train_ids, labels, test_ids, c: float) -> np.ndarray:
    """NB-SVM with scikit-learn, built independently of model_lib: each text's distinct n-gram ids
    as words, binary counts scaled by their NB log-count ratios, l2-normalised, logistic regression."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import normalize

    def documents(ids):
        return [" ".join(f"w{i}" for i in row) for row in distinct_ngram_ids(ids, 30, 37, 2)]

    vectorizer = CountVectorizer(token_pattern=r"\S+", lowercase=False, min_df=2, binary=True)
    counts = vectorizer.fit_transform(documents(train_ids)).toarray()
    p, q = counts[labels == 1].sum(0) + 1.0, counts[labels == 0].sum(0) + 1.0
    r = np.log((p / p.sum()) / (q / q.sum()))
    classifier = LogisticRegression(C=c, max_iter=3000).fit(normalize(counts * r), labels)
    return classifier.predict_proba(normalize(vectorizer.transform(documents(test_ids)).toarray() * r))[:, 1]


def test_nb_views_inside_keras_score_as_scikit_learn_does():
    """The ensemble's views, rebuilt from tables in Keras layers, give an independently built
    NB-SVM's own probabilities, and the ensemble mixes the logits with the weights given."""
    ids, labels = small_texts(0)
    test_ids, _ = small_texts(1)
    model = build_model("ngram_glove", np.zeros((30, 4), np.float32), max_length=8, ngram_buckets=37, ngram_order=2)
    view = fit_nb_view(ngram_matrix(ids, 30, 37, 2), labels, c=10.0)
    alone = with_views(model, [(view, 1.0)], buckets=37, order=2)
    expected = nbsvm_probabilities(ids, labels, test_ids, c=10.0)
    np.testing.assert_allclose(np.asarray(alone(test_ids)).reshape(-1), expected, atol=1e-4)

    def logit(p):
        return np.log(p) - np.log1p(-p)

    other = fit_nb_view(ngram_matrix(test_ids, 30, 37, 2), labels, c=1.0)  # a second view, fitted on other texts
    kernel, _ = model.get_layer("glove_logit").get_weights()
    model.get_layer("glove_logit").set_weights([kernel, np.array([0.7], np.float32)])  # the model's own logit: 0.7
    mixed = with_views(model, [(view, 0.5), (other, 0.3)], buckets=37, order=2)
    core = np.asarray(model(test_ids)).reshape(-1)
    second = np.asarray(with_views(model, [(other, 1.0)], buckets=37, order=2)(test_ids)).reshape(-1)
    combined = 0.2 * logit(core) + 0.5 * logit(expected) + 0.3 * logit(second)
    np.testing.assert_allclose(np.asarray(mixed(test_ids)).reshape(-1), 1 / (1 + np.exp(-combined)), atol=1e-4)
    assert with_views(model, [], buckets=37, order=2) is model


def test_nb_ratios_are_those_of_the_loop_over_texts():
    ids, labels = small_texts(2)
    ratios = nb_log_count_ratios(ids, labels, vocab_size=30, buckets=37, order=2)
    positive, negative = np.zeros(len(ratios)), np.zeros(len(ratios))
    for row, label in zip(distinct_ngram_ids(ids, 30, 37, 2), labels):
        (positive if label else negative)[row] += 1.0
    kept = (positive + negative) >= 2
    kept[0] = False
    p, q = positive + 1.0, negative + 1.0
    expected = np.where(kept, np.log((p / p[kept].sum()) / (q / q[kept].sum())), 0.0)
    np.testing.assert_allclose(ratios, expected, rtol=1e-6, atol=1e-6)


def test_length_reference_scales_short_texts_up_and_leaves_long_ones():
    weights = np.ones((2, 16, 1), np.float32)
    ids = np.zeros((2, 16), np.int32)
    ids[0, -1:] = 5  # one id: scaled by sqrt(4 / 1)
    ids[1, :] = np.arange(1, 17)  # 16 ids, more than the reference: a plain sum
    sums = np.asarray(MaskedSum(reference=4.0, power=0.5)(weights, ids)).reshape(-1)
    np.testing.assert_allclose(sums, [2.0, 16.0])
