"""Model builders: shapes, the hashed n-gram layer and its NumPy twin, the seed CNN's constraints;
every registered model through one shared harness, and the custom layers' serialisation."""

from pathlib import Path

import keras
import numpy as np
import pytest

from model_lib import registry
from model_lib.config import TrainConfig, check_train_fits_data, effective_hyperparameters, from_mapping
from model_lib.errors import ConfigError
from model_lib.models import (
    CompactIds,
    HashedNgrams,
    LogitMix,
    LogLength,
    MaskedMean,
    MaskedSum,
    NormalizedLinearLogit,
    build_model,
    compact_index,
    distinct_ngram_ids,
    fit_nb_view,
    nb_log_count_ratios,
    ngram_glove_shipped,
    ngram_matrix,
    with_views,
    without_optimizer,
)

# A vocabulary of 18 words: 20 ids with padding and OOV.
WORDS = "a film good bad great dull boring moving wonderful awful plot actor , . the was not it".split()
TEXTS = ["a wonderful , moving film", "a dull , boring film", "never seen words here"]
HARNESS_SETTINGS = {"ngram_buckets": 64, "ngram_order": 2}  # tiny tables for the models that take them
HARNESS_LENGTH = 12  # tokens per review, for the models that take any length


def run_model_saving_test(name: str, tmp_path: Path) -> None:
    """The shared test every registered model goes through (keras-hub's ``run_model_saving_test``
    shape): validate the config, check the data, build and fit the model as a training run does,
    train a step, then save the raw-string model, reload it and predict raw strings the same.

    The step runs eagerly: tracing a train step costs seconds per model, and the traced loop is
    tested by training the default model (test_training.py); prediction after reloading is traced.
    """
    import tensorflow as tf

    from model_lib.export import raw_string_model, save_model
    from model_lib.inference import load_model, predict
    from model_lib.prepared import PreparedData, Split
    from model_lib.text import Vocabulary
    from model_lib.training import _compiled_model

    entry = registry.get(name)
    length = entry.length or HARNESS_LENGTH
    vocabulary = Vocabulary(WORDS)
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(vocabulary.size, 4)).astype(np.float32)
    x = rng.integers(0, vocabulary.size, size=(8, length)).astype(np.int32)
    y = np.arange(8) % 2
    config = from_mapping(TrainConfig, {"model": name, **HARNESS_SETTINGS}, "test")
    check_train_fits_data(config, x.shape)
    data = PreparedData(Split.from_padded(x, y), Split.from_padded(x, y), vocabulary, matrix)
    model = _compiled_model(config, effective_hyperparameters(config), data, np.arange(len(y)))
    model.run_eagerly = True
    before_step = [np.asarray(w) for w in model.trainable_weights]
    model.train_on_batch(x, y.astype("float32"))
    assert any(not np.array_equal(w, np.asarray(v)) for w, v in zip(before_step, model.trainable_weights))

    probabilities = np.asarray(model(x[:3]))
    assert probabilities.shape == (3, 1)
    assert ((probabilities > 0) & (probabilities < 1)).all()
    raw = raw_string_model(model, vocabulary, length)
    before = np.asarray(raw(tf.constant([[text] for text in TEXTS]))).reshape(-1)
    np.testing.assert_allclose(before, np.asarray(model(vocabulary.encoder(length)(tf.constant(TEXTS)))).reshape(-1), rtol=1e-6)
    save_model(raw, tmp_path / "model.keras")
    keras.utils.clear_session()
    after = predict(load_model(tmp_path / "model.keras"), TEXTS)
    np.testing.assert_allclose(before, after, rtol=1e-5)
    assert after.shape == (len(TEXTS),)


@pytest.mark.parametrize("name", registry.names())
def test_every_registered_model_trains_saves_reloads_and_predicts_raw_strings(name, tmp_path):
    run_model_saving_test(name, tmp_path)


def mean_embedding(embedding_matrix: np.ndarray, *, max_length: int, dropout: float = 0.0) -> keras.Model:
    """A toy model: the mean of the review's word vectors, then one logistic unit."""
    ids = keras.Input(shape=(max_length,), dtype="int32", name="token_ids")
    vectors = keras.layers.Embedding(*embedding_matrix.shape, name="glove")(ids)
    bag = keras.layers.Dropout(dropout)(MaskedMean()(vectors, ids))
    model = keras.Model(ids, keras.layers.Dense(1, activation="sigmoid")(bag), name="mean_embedding")
    model.get_layer("glove").set_weights([embedding_matrix])
    return model


@pytest.fixture
def toy_model():
    entry = registry.ModelEntry(
        "mean_embedding",
        builder=mean_embedding,
        defaults=registry.ModelDefaults(epochs=1, batch_size=4, learning_rate=0.01, dropout=0.1),
    )
    registry.register(entry)
    yield entry
    registry.unregister(entry.name)


def test_a_model_is_added_by_one_registry_entry_and_its_builder(toy_model, tmp_path):
    config = from_mapping(TrainConfig, {"model": "mean_embedding"}, "hp")
    assert effective_hyperparameters(config)["dropout"] == 0.1  # its defaults
    assert build_model("mean_embedding", np.zeros((5, 2), np.float32), max_length=4).name == "mean_embedding"
    run_model_saving_test("mean_embedding", tmp_path)


def test_config_choices_are_read_from_the_registry_when_validating(toy_model):
    assert from_mapping(TrainConfig, {"model": "mean_embedding"}, "hp").model == "mean_embedding"
    registry.unregister("mean_embedding")
    with pytest.raises(ConfigError, match=r"hp\.model: expected one of ngram_glove, seed_cnn, got 'mean_embedding'"):
        from_mapping(TrainConfig, {"model": "mean_embedding"}, "hp")


def test_a_name_is_registered_once_unless_replaced(toy_model):
    with pytest.raises(ValueError, match="model 'mean_embedding' is registered already"):
        registry.register(toy_model)
    assert registry.register(toy_model, replace=True) is toy_model


def test_a_registered_length_is_checked_against_the_data(toy_model):
    fixed = registry.register(registry.ModelEntry("fixed", mean_embedding, toy_model.defaults, length=16), replace=True)
    try:
        with pytest.raises(
            ConfigError, match=r"train.model: 'fixed' needs reviews encoded to 16 tokens, but the prepared data have 8"
        ):
            check_train_fits_data(TrainConfig(model=fixed.name), (10, 8))
        check_train_fits_data(TrainConfig(model=fixed.name), (10, 16))
    finally:
        registry.unregister(fixed.name)


def test_a_builder_is_given_only_the_hyperparameters_it_takes():
    hp = effective_hyperparameters(TrainConfig(model="seed_cnn"))
    assert registry.get("seed_cnn").builder_arguments(hp) == {"dropout": 0.0}
    assert set(registry.get("ngram_glove").builder_arguments(hp)) == {"dropout", "ngram_buckets", "ngram_order"}


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


# One instance of every serialisable layer of model_lib.models, with settings other than the defaults.
LAYERS = [
    HashedNgrams(vocab_size=20, buckets=37, order=2, name="ngrams"),
    MaskedSum(reference=4.0, power=0.25, name="masked_sum"),
    MaskedSum(reference=None),
    MaskedMean(name="masked_mean"),
    LogLength(name="log_length"),
    NormalizedLinearLogit(intercept=0.3, name="view_logit"),
    LogitMix(view_weights=[0.4, 0.2], name="mix"),
    CompactIds(id_count=20, name="compact_ids"),
]


def layer_inputs(layer: keras.layers.Layer) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 20, size=(2, 6)).astype(np.int32)
    weights = rng.normal(size=(2, 6, 1)).astype(np.float32)
    if isinstance(layer, (HashedNgrams, LogLength, CompactIds)):
        return [ids]
    if isinstance(layer, NormalizedLinearLogit):
        return [weights, np.abs(weights), ids]
    if isinstance(layer, LogitMix):
        return [rng.uniform(0.1, 0.9, size=(2, 1)).astype(np.float32), *rng.normal(size=(2, 2, 1)).astype(np.float32)]
    return [weights, ids]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: f"{type(layer).__name__}-{layer.name}")
def test_layer_config_round_trips_to_the_same_layer(layer):
    copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(copy) is type(layer)
    assert copy.get_config() == layer.get_config()
    assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()
    inputs = layer_inputs(layer)
    np.testing.assert_allclose(np.asarray(copy(*inputs)), np.asarray(layer(*inputs)), rtol=1e-6)


def test_every_serialisable_layer_of_the_models_has_a_round_trip_test():
    registered = {
        obj
        for key, obj in keras.saving.get_custom_objects().items()
        if key.startswith("model_lib>") and obj.__module__ == "model_lib.models"
    }
    assert registered == {type(layer) for layer in LAYERS}


def test_a_saved_ensemble_reloads_with_its_layers_and_predicts_the_same(tmp_path):
    """The shipped ngram_glove with an NB-SVM view holds every custom layer; saved and reloaded, it scores the same."""
    ids, labels = small_texts(0)
    model = build_model("ngram_glove", np.zeros((30, 4), np.float32), max_length=8, ngram_buckets=37, ngram_order=2)
    ensemble = ngram_glove_shipped(model, [(fit_nb_view(ngram_matrix(ids, 30, 37, 2), labels), 0.5)], buckets=37, order=2)
    before = np.asarray(ensemble(ids))
    ensemble.save(tmp_path / "ensemble.keras")
    keras.utils.clear_session()
    reloaded = keras.models.load_model(tmp_path / "ensemble.keras")
    assert {type(layer) for layer in LAYERS} <= {type(layer) for layer in _all_layers(reloaded)}
    np.testing.assert_allclose(np.asarray(reloaded(ids)), before, rtol=1e-5)


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    layers = []
    for layer in model.layers:
        layers.extend([layer, *(_all_layers(layer) if isinstance(layer, keras.Model) else [])])
    return layers


def test_compact_ids_give_each_used_id_its_rank_and_every_other_id_row_0():
    rng = np.random.default_rng(3)
    used = rng.random(1001) < 0.3
    used[0] = False
    layer = CompactIds(id_count=1001)
    layer.set_weights([compact_index(used)])
    ids = rng.integers(0, 1001, size=(4, 50)).astype(np.int32)
    expected = np.where(used[ids], np.cumsum(used)[ids], 0)  # used ids are rows 1, 2, ... in id order
    np.testing.assert_array_equal(np.asarray(layer(ids)), expected)


def test_the_shipped_ngram_glove_scores_as_its_ensemble_bit_for_bit_in_a_third_of_the_rows(tmp_path):
    """The shipped model (compact tables, no optimizer, saved and reloaded) gives the exact
    probabilities of the trained model and its views put together by with_views."""
    ids, labels = small_texts(0)
    test_ids, _ = small_texts(1)
    glove = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    ratios = nb_log_count_ratios(ids, labels, vocab_size=30, buckets=37, order=2)
    model = build_model("ngram_glove", glove, max_length=8, ngram_buckets=37, ngram_order=2, ngram_weights=ratios)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.train_on_batch(ids, labels.astype("float32"))  # Adam slots and trained weights, as a run leaves them
    gate = model.get_layer("ngram_active").get_weights()[0]
    assert 0 < gate.sum() < len(gate)  # some n-grams switched off, as min_count does
    views = [
        (fit_nb_view(ngram_matrix(ids, 30, 37, 2), labels), 0.3),
        (fit_nb_view(ngram_matrix(test_ids, 30, 37, 2), labels), 0.2),
    ]
    expected = np.asarray(with_views(model, views, buckets=37, order=2)(test_ids))
    shipped = ngram_glove_shipped(model, views, buckets=37, order=2)
    shipped.save(tmp_path / "shipped.keras")
    keras.utils.clear_session()
    reloaded = keras.models.load_model(tmp_path / "shipped.keras")
    np.testing.assert_array_equal(np.asarray(reloaded(test_ids)), expected)
    rows = reloaded.get_layer("view1_weights").get_weights()[0]
    assert len(rows) < len(gate)
    assert getattr(reloaded, "optimizer", None) is None
    alone = ngram_glove_shipped(model, [], buckets=37, order=2)  # no views: the trained model itself, compact
    np.testing.assert_array_equal(np.asarray(alone(test_ids)), np.asarray(model(test_ids)))


def test_without_optimizer_keeps_the_weights_and_drops_the_slots():
    model = build_model("seed_cnn", np.zeros((30, 4), np.float32))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    copy = without_optimizer(model)
    assert getattr(copy, "optimizer", None) is None
    for mine, theirs in zip(copy.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
