"""Tokens the GloVe way, the plain-text vocabulary and 'pre' padded encoding."""

import numpy as np
import pytest

from model_lib.embeddings import FIRST_TOKEN_ID, PAD_ID
from model_lib.errors import DataError
from model_lib.text import Vocabulary


def assert_tokens(text, expected):
    """Check that ``text`` encodes to exactly ``expected``, in order, through the encoder that the
    vocabulary fit, the encoded splits and the exported raw-string model share."""
    tokens = list(dict.fromkeys(expected))
    ids = Vocabulary(tokens).encode([text], max_length=len(expected) + 1)
    assert ids.tolist() == [[PAD_ID, *(FIRST_TOKEN_ID + tokens.index(token) for token in expected)]], text


def test_tokens_split_clitics_and_punctuation_like_glove():
    assert_tokens("I don't think it's GREAT, really!", ["i", "do", "n't", "think", "it", "'s", "great", ",", "really", "!"])
    assert_tokens("can't", ["ca", "n't"])
    assert_tokens("'quoted' o'clock<br />end", ["'", "quoted", "'", "o'clock", "end"])


def test_the_vocabulary_is_fitted_on_the_same_tokens():
    assert Vocabulary.fit(["I don't, really!"], min_count=1).tokens == ["!", ",", "do", "i", "n't", "really"]


def test_unicode_line_separators_never_reach_a_token():
    assert_tokens("wait\x85what\u2028now\u2029then", ["wait", "what", "now", "then"])


def test_vocabulary_is_ranked_by_count_then_token_and_deterministic():
    texts = ["b a c", "a b", "a d d"]
    vocabulary = Vocabulary.fit(texts, max_size=3, min_count=1)
    assert vocabulary.tokens == ["a", "b", "d"]  # a:3, then b and d tie at 2 -> alphabetical; c dropped
    assert Vocabulary.fit(list(reversed(texts)), max_size=3, min_count=1) == vocabulary


def test_min_count_drops_rare_tokens():
    assert Vocabulary.fit(["a a b"], max_size=10, min_count=2).tokens == ["a"]


def test_empty_training_texts_are_an_error():
    with pytest.raises(DataError, match="empty training split"):
        Vocabulary.fit([])


def test_vocabulary_file_is_plain_text_split_on_newline_only(tmp_path):
    vocabulary = Vocabulary(["the", "café", "n't", "#hash"])
    vocabulary.save(tmp_path / "vocab.txt")
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8") == "the\ncafé\nn't\n#hash\n"
    assert Vocabulary.load(tmp_path / "vocab.txt") == vocabulary


def test_vocabulary_file_with_a_repeated_token_is_an_error(tmp_path):
    (tmp_path / "v.txt").write_text("a\nb\na\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"v\.txt: .*token 'a' appears twice"):
        Vocabulary.load(tmp_path / "v.txt")


def test_encoding_pads_and_truncates_at_the_front():
    vocabulary = Vocabulary(["good", "film", "bad"])
    ids = vocabulary.encode(["good film", "bad bad bad good film unknown"], max_length=4)
    assert ids.dtype == np.int32
    assert ids[0].tolist() == [0, 0, 2, 3]
    assert ids[1].tolist() == [4, 2, 3, 1]  # last four tokens kept; unknown -> OOV id 1


def test_vocabulary_with_no_token_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"no token appears at least 5 times in the 2 training texts; expected a lower min_count"):
        Vocabulary.fit(["a film", "a story"], min_count=5)
    empty = tmp_path / "vocab.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=r"vocab\.txt: vocabulary: no tokens; expected one token per line"):
        Vocabulary.load(empty)
