"""`model-lib evaluate` as a user runs it: a test split that does not belong to the model is refused
(its scores would look plausible), in a real process."""

import os
import subprocess

import numpy as np
import pytest
import yaml

from model_lib.prepared import save_split
from model_lib.text import Vocabulary
from tests.conftest import BIN, review_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_evaluate_refuses_a_split_of_another_vocabulary_with_exit_2(tmp_path, tiny_training):
    prepared, models = tmp_path / "data" / "prepared", tmp_path / "models"
    prepared.mkdir(parents=True)
    models.mkdir()
    (models / "model.keras").write_bytes(tiny_training.model_file.read_bytes())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"threshold": 0.5}}), encoding="utf-8")
    tokens = list(tiny_training.data.vocabulary.tokens)
    tokens[0], tokens[1] = tokens[1], tokens[0]  # another prepare run: the same words, other ids
    other = Vocabulary(tokens)
    rows = review_rows(240)[180:]
    # Written as an older version did (no vocabulary digest in the split): vocab.txt beside it decides.
    save_split(prepared / "test", other.encode([t for t, _ in rows], 40), np.asarray([y for _, y in rows], np.int8))
    other.save(prepared / "vocab.txt")

    result = subprocess.run(
        [str(BIN / "model-lib"), "evaluate", "--no-mlflow"],
        cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": ""}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    expected = (
        "model-lib evaluate: error: data/prepared/test: encoded with the vocabulary data/prepared/vocab.txt, "
        f"not the one of the model models/model.keras: line 1 is {tokens[0]!r} there, {tokens[1]!r} in the model"
    )
    assert expected in result.stderr.strip().split("\n")[-1]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "reports" / "metrics.json").exists()
