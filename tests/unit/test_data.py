"""Review sources: bundled IMDB, aclImdb tarball and folder, CSV and JSONL; cleaning; the split."""

import tarfile

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from model_lib.data import Reviews, load_reviews, read_reviews_jsonl, split_indices, write_reviews_jsonl
from model_lib.errors import DataError
from tests.conftest import make_aclimdb_tarball


@pytest.fixture(scope="module")
def bundled():
    return load_reviews("bundled")


def test_bundled_source_is_the_25000_imdb_rows_in_file_order(bundled):
    assert len(bundled) == 25000
    assert np.bincount(bundled.labels).tolist() == [12500, 12500]
    assert bundled.texts[0].startswith("I rented I AM CURIOUS-YELLOW")
    assert not any("<br" in t for t in bundled.texts[:500])


def test_default_split_is_sklearns_stratified_split(bundled):
    train, test = split_indices(bundled, test_size=0.2, seed=42)
    expected_train, expected_test = train_test_split(np.arange(25000), test_size=0.2, random_state=42, stratify=bundled.labels)
    assert np.array_equal(train, expected_train) and np.array_equal(test, expected_test)


def test_tarball_is_read_in_place_with_official_split(aclimdb_tarball, tmp_path):
    reviews = load_reviews(aclimdb_tarball)
    assert len(reviews) == 12  # unsup and README ignored
    assert reviews.split.count("train") == 6 and reviews.split.count("test") == 6
    assert "<br" not in reviews.texts[0] and reviews.texts[0].endswith(" end")
    assert not (tmp_path / "aclImdb").exists()
    train, test = split_indices(reviews, test_size=0.5, seed=1)
    assert {reviews.split[i] for i in train} == {"train"} and {reviews.split[i] for i in test} == {"test"}


def test_extracted_folder_gives_same_reviews_as_tarball(aclimdb_tarball, tmp_path):
    with tarfile.open(aclimdb_tarball) as archive:
        archive.extractall(tmp_path / "x", filter="data")
    from_folder = load_reviews(tmp_path / "x" / "aclImdb")
    from_tarball = load_reviews(aclimdb_tarball)
    assert from_folder.texts == from_tarball.texts and from_folder.split == from_tarball.split


def test_truncated_tarball_is_an_error_naming_the_file(aclimdb_tarball, tmp_path):
    cut = tmp_path / "cut.tar.gz"
    data = aclimdb_tarball.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.tar\.gz: truncated or not a tar archive"):
        load_reviews(cut)


def test_missing_source_is_an_error(tmp_path):
    with pytest.raises(DataError, match="review source not found"):
        load_reviews(tmp_path / "aclImdb_v1.tar.gz")


def test_non_utf8_review_is_replaced_and_counted(tmp_path):
    tarball = make_aclimdb_tarball(tmp_path / "a.tar.gz", extra={"aclImdb/train/pos/99_9.txt": b"caf\xe9 great"})
    reviews = load_reviews(tarball)
    assert reviews.decode_errors == 1
    assert any("caf\ufffd great" in t for t in reviews.texts)


def test_non_utf8_review_fails_with_file_name_when_asked(tmp_path):
    tarball = make_aclimdb_tarball(tmp_path / "a.tar.gz", extra={"aclImdb/train/pos/99_9.txt": b"caf\xe9"})
    with pytest.raises(DataError, match=r"aclImdb/train/pos/99_9\.txt: not valid UTF-8"):
        load_reviews(tarball, on_decode_error="fail")


def test_csv_reviews_are_cleaned(tiny_reviews):
    reviews = load_reviews(tiny_reviews)
    assert len(reviews) == 200 and reviews.split is None
    assert "<br" not in reviews.texts[0]


@pytest.mark.parametrize(
    "content,message",
    [
        ("text,rating\nok,1\n", "missing column 'label'"),
        ("text,label\n,1\n", "line 2: empty text"),
        ("text,label\ngood,2\n", "line 2: label must be 0 or 1, got '2'"),
        ("text,label\ngood,yes\n", "line 2: label must be 0 or 1, got 'yes'"),
    ],
)
def test_bad_csv_is_an_error_naming_line_and_field(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_reviews(path)


def test_jsonl_reviews_and_missing_field(tmp_path):
    good = tmp_path / "r.jsonl"
    good.write_text('{"text": "fine", "label": 1}\n{"text": "bad", "label": 0}\n', encoding="utf-8")
    assert load_reviews(good).labels.tolist() == [1, 0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 1: missing field 'label'"):
        load_reviews(bad)


def test_subset_is_stratified_seeded_and_in_file_order(bundled):
    sample = bundled.subset(1000, seed=3)
    assert np.bincount(sample.labels).tolist() == [500, 500]
    assert sample.texts == bundled.subset(1000, seed=3).texts
    positions = [bundled.texts.index(t) for t in sample.texts[:20]]
    assert positions == sorted(positions)


def test_jsonl_round_trip_keeps_split(aclimdb_tarball, tmp_path):
    reviews = load_reviews(aclimdb_tarball)
    write_reviews_jsonl(reviews, tmp_path / "r.jsonl")
    again = read_reviews_jsonl(tmp_path / "r.jsonl")
    assert again.texts == reviews.texts and again.split == reviews.split


def test_empty_training_split_is_an_error():
    reviews = Reviews(["a", "b"], np.asarray([0, 1], np.int8), split=["test", "test"])
    with pytest.raises(DataError, match="training split is empty"):
        split_indices(reviews)


@pytest.mark.parametrize(
    "header,message",
    [
        ("text,label,label", r"bad\.csv: header: column 'label' appears twice \(columns 2 and 3\); expected each column once"),
        ("label,text,text", r"bad\.csv: header: column 'text' appears twice \(columns 2 and 3\); expected each column once"),
        ("text,,label", r"bad\.csv: header: column 2 has no name; expected named columns such as text,label"),
        ("review,label", r"bad\.csv: header: missing column 'text'; expected columns text,label, got review,label"),
    ],
)
def test_ambiguous_csv_header_is_an_error_naming_the_column(tmp_path, header, message):
    path = tmp_path / "bad.csv"
    path.write_text(f"{header}\ngood film,1,0\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_reviews(path)


def test_csv_row_with_more_fields_than_the_header_is_an_error(tmp_path):
    # An unquoted comma in a text would shift the label: the row must not be read as text,label.
    path = tmp_path / "bad.csv"
    path.write_text("text,label\ngood,1\ngreat, not bad,0\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.csv: line 3: 3 fields, but the header has 2; expected quoted texts"):
        load_reviews(path)


def test_csv_with_a_byte_order_mark_reads_its_first_column(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("text,label\ngood,1\nbad,0\n".encode("utf-8-sig"))
    assert load_reviews(path).labels.tolist() == [1, 0]


def test_jsonl_with_a_repeated_field_is_an_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine", "label": 1, "label": 0}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl: line 1: field 'label' appears twice; expected each field once"):
        load_reviews(path)


def test_split_with_one_class_only_is_an_error():
    reviews = Reviews([f"review {i}" for i in range(20)], np.ones(20, np.int8))
    with pytest.raises(DataError, match=r"the training split holds only label 1 \(16 reviews\); expected both labels 0 and 1"):
        split_indices(reviews)


def test_source_split_whose_test_side_has_one_class_is_an_error():
    reviews = Reviews(["a", "b", "c", "d"], np.asarray([0, 1, 1, 1], np.int8), split=["train", "train", "test", "test"])
    with pytest.raises(DataError, match=r"the test split holds only label 1 \(2 reviews\); expected both labels 0 and 1"):
        split_indices(reviews)


@pytest.mark.parametrize(
    "lines,message",
    [
        (['{"text": "a", "label": 1, "split": "train"}', '{"text": "b", "label": 0, "split": "dev"}'],
         r"r\.jsonl: line 2: split: expected 'train' or 'test', got 'dev'"),
        (['{"text": "a", "label": 1, "split": "train"}', '{"text": "b", "label": 0}'],
         r"r\.jsonl: line 2: missing field 'split'; expected it on every line or on none"),
        (['{"text": "a", "label": 1}', '{"text": "b", "label": 0, "split": "test"}'],
         r"r\.jsonl: line 2: field 'split' that earlier lines lack; expected it on every line or on none"),
        (['{"text": null, "label": 1}'], r"r\.jsonl: line 1: empty text"),
    ],
)  # fmt: skip
def test_reviews_file_whose_split_or_text_is_ambiguous_is_an_error(tmp_path, lines, message):
    # Rows of another split were dropped, a partial split was ignored, a null text became "None".
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_reviews_jsonl(path)
