"""The default model on 2,000 real bundled reviews, one epoch: it learns, and the saved raw-string
model reloads and predicts the same."""

import keras
import numpy as np
import pytest

from model_lib.config import TrainConfig
from model_lib.data import load_reviews, split_indices
from model_lib.embeddings import embedding_matrix, load_glove
from model_lib.export import save_model
from model_lib.inference import load_model, predict
from model_lib.prepared import PreparedData, Split
from model_lib.text import Vocabulary
from model_lib.training import run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_default_model_on_2000_bundled_reviews_round_trips(tmp_path):
    reviews = load_reviews("bundled").subset(2000, seed=42)
    train, test = split_indices(reviews, test_size=0.2, seed=42)
    vocabulary = Vocabulary.fit([reviews.texts[i] for i in train], max_size=10000)
    ids = vocabulary.encode(reviews.texts, 1000)
    matrix = embedding_matrix(load_glove("bundled"), vocabulary.tokens).matrix
    split = Split.from_padded  # the splits as prepare writes them: ragged, padded a batch at a time
    data = PreparedData(split(ids[train], reviews.labels[train]), split(ids[test], reviews.labels[test]), vocabulary, matrix)

    result = run(TrainConfig(epochs=1), data, verbose=0)

    test_texts = [reviews.texts[i] for i in test]
    before = predict(result.raw_model, test_texts)
    assert ((before >= 0.5) == reviews.labels[test]).mean() > 0.75  # 400 unseen real reviews
    save_model(result.raw_model, tmp_path / "model.keras")
    keras.utils.clear_session()
    after = predict(load_model(tmp_path / "model.keras"), test_texts)
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)
