"""benchmarks/scale.py: the corpus is a seeded recombination of real sentences within each label,
and the runner's results file accumulates sizes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]

# Each sentence names its label and review, so a generated review shows where its sentences came from.
POSITIVE = [f"Positive review {r} sentence {s} was great." for r in range(6) for s in range(r % 3 + 1)]
NEGATIVE = [f"Negative review {r} sentence {s} was awful!" for r in range(6) for s in range(r % 3 + 1)]


@pytest.fixture(scope="module")
def scale() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmarks_scale", REPO / "benchmarks" / "scale.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _source(tmp_path: Path) -> Path:
    """Write a JSONL source of 6 reviews a label, of 1 to 3 sentences each."""
    rows = []
    for label, sentences in ((1, POSITIVE), (0, NEGATIVE)):
        for review in range(6):
            mine = [s for s in sentences if f"review {review} " in s]
            rows.append({"text": " ".join(mine), "label": label})
    path = tmp_path / "source.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _corpus(scale: ModuleType, source: Path, out: Path, seed: int = 0) -> list[dict[str, object]]:
    scale.write_corpus(out, 200, seed=seed, source=str(source), progress=False)
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_corpus_is_the_same_for_a_seed_and_differs_for_another(scale: ModuleType, tmp_path: Path) -> None:
    source = _source(tmp_path)
    first = (tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl")
    _corpus(scale, source, first[0], seed=3)
    _corpus(scale, source, first[1], seed=3)
    _corpus(scale, source, first[2], seed=4)
    assert first[0].read_bytes() == first[1].read_bytes()
    assert first[0].read_bytes() != first[2].read_bytes()


def test_corpus_labels_are_balanced(scale: ModuleType, tmp_path: Path) -> None:
    rows = _corpus(scale, _source(tmp_path), tmp_path / "corpus.jsonl")
    assert len(rows) == 200
    assert sum(row["label"] for row in rows) == 100


def test_every_sentence_of_a_review_comes_from_its_label(scale: ModuleType, tmp_path: Path) -> None:
    rows = _corpus(scale, _source(tmp_path), tmp_path / "corpus.jsonl")
    for row in rows:
        pool = POSITIVE if row["label"] == 1 else NEGATIVE
        sentences = scale._SENTENCE_END.split(row["text"])
        assert 1 <= len(sentences) <= 3  # a real review's sentence count
        assert all(sentence in pool for sentence in sentences), row


def test_merging_results_keeps_earlier_sizes_and_stages(scale: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "scale.json"
    scale.save_results(path, 100, {"seed": 0, "stages": {"ingest": {"seconds": 1.0}, "train": {"seconds": 9.0}}})
    scale.save_results(path, 50, {"seed": 0, "stages": {"ingest": {"seconds": 0.5}}})
    scale.save_results(path, 100, {"seed": 0, "stages": {"ingest": {"seconds": 2.0}}})
    sizes = json.loads(path.read_text())["sizes"]
    assert set(sizes) == {"50", "100"}
    assert sizes["100"]["stages"] == {"ingest": {"seconds": 2.0}, "train": {"seconds": 9.0}}
    assert sizes["50"]["stages"] == {"ingest": {"seconds": 0.5}}
