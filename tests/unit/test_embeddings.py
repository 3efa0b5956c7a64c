"""GloVe: bundled vectors, text and zip files, odd words, bad rows, the matrix and its coverage."""

import zipfile

import numpy as np
import pytest

from model_lib.embeddings import Glove, embedding_matrix, load_glove
from model_lib.errors import EmbeddingError
from tests.conftest import GLOVE_WORDS, glove_text


def test_text_file_keeps_hash_nan_null_and_quote_words(tiny_glove):
    glove = load_glove(tiny_glove, dim=3)
    assert glove.words == list(GLOVE_WORDS)
    assert np.allclose(glove.vectors[glove.words.index("nan")], [1.0, 2.0, 3.0])
    assert glove.vectors.dtype == np.float32


def test_zip_member_is_found_by_dimension(tmp_path):
    path = tmp_path / "glove.6B.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("glove.6B.3d.txt", glove_text())
        archive.writestr("glove.6B.2d.txt", "a 1 2\n")
    assert load_glove(path, dim=3).words == list(GLOVE_WORDS)
    assert load_glove(path, dim=2, member="glove.6B.2d.txt").words == ["a"]


def test_rows_of_different_widths_name_the_line(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("a 1 2 3\nb 1 2 3\nc 1 2 3 4\n", encoding="utf-8")
    with pytest.raises(EmbeddingError, match=r"g\.txt: line 3: 4 numbers, but line 1 has 3"):
        load_glove(path, dim=3)
    path.write_text("a 1 2 3\nb 1 2\n", encoding="utf-8")
    with pytest.raises(EmbeddingError, match=r"line 2: 2 numbers, but line 1 has 3"):
        load_glove(path, dim=3)


def test_dimension_mismatch_is_an_error(tiny_glove):
    with pytest.raises(EmbeddingError, match="vectors have 3 dimensions, but embedding_dim is 50"):
        load_glove(tiny_glove, dim=50)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(EmbeddingError, match="GloVe file not found"):
        load_glove(tmp_path / "glove.txt")


def test_bundled_vectors_are_glove_6b_50d():
    glove = load_glove("bundled", dim=50)
    assert len(glove) == 400000 and glove.dim == 50
    assert glove.words[:3] == ["the", ",", "."]
    assert "nan" in glove.words and "null" in glove.words
    assert np.allclose(glove.vectors[0, :3], [0.418, 0.24968, -0.41242])


def test_matrix_rows_follow_token_ids_and_coverage_counts_found_words():
    glove = Glove(["good", "bad"], np.asarray([[1.0, 2.0], [3.0, 4.0]], np.float32))
    result = embedding_matrix(glove, ["bad", "unknownword", "good"], seed=0)
    assert result.matrix.shape == (5, 2)
    assert np.array_equal(result.matrix[:2], np.zeros((2, 2)))  # padding, OOV
    assert np.array_equal(result.matrix[2], [3.0, 4.0]) and np.array_equal(result.matrix[4], [1.0, 2.0])
    assert result.found == 2 and result.coverage == pytest.approx(2 / 3)
    assert np.array_equal(result.matrix, embedding_matrix(glove, ["bad", "unknownword", "good"], seed=0).matrix)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_vector_that_is_not_finite_is_an_error_naming_the_word(tmp_path, value):
    path = tmp_path / "g.txt"
    path.write_text(f"a 1 2 3\nb 1 {value} 3\n", encoding="utf-8")
    with pytest.raises(EmbeddingError, match=r"g\.txt: row 2 \(word 'b'\): expected finite numbers, got NaN or inf"):
        load_glove(path, dim=3)


def test_word_that_appears_twice_is_an_error(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("a 1 2 3\nb 1 2 3\na 4 5 6\n", encoding="utf-8")
    with pytest.raises(EmbeddingError, match=r"g\.txt: word 'a' appears twice \(rows 1 and 3\); expected each word once"):
        load_glove(path, dim=3)


def test_matrix_of_vectors_that_are_not_finite_is_an_error():
    # The bundled vectors are not scanned at load: the rows the vocabulary takes are checked.
    glove = Glove(["good", "bad"], np.asarray([[1.0, np.nan], [3.0, 4.0]], np.float32))
    with pytest.raises(EmbeddingError, match=r"GloVe: word 'good': expected finite numbers, got NaN or inf"):
        embedding_matrix(glove, ["bad", "good"], seed=0)


def test_glove_that_covers_no_vocabulary_token_is_an_error():
    # Cased words (or another language): every row would be random, and training would "work".
    glove = Glove(["Good", "Bad"], np.asarray([[1.0, 2.0], [3.0, 4.0]], np.float32), source="cased.txt")
    with pytest.raises(EmbeddingError, match=r"cased\.txt: none of the vocabulary's 2 tokens has a vector; expected"):
        embedding_matrix(glove, ["good", "bad"], seed=0)
