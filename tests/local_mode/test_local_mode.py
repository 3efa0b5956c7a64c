"""`tox -e local`: the library wheel and sagemaker-training in a fresh virtualenv (what the training
image installs) run a real script-mode job on a small bundled subset, without Docker."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # a toolkit job in a fresh process
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PARAMS = """
ingest: {source: bundled, limit: 400, seed: 42}
prepare: {test_size: 0.2, seed: 42, vocab_size: 3000, min_count: 2, max_length: 1000, glove: bundled, embedding_dim: 50}
train: {model: ngram_glove, epochs: 1, seed: 42, ngram_buckets: 4096}
"""


def run_model_lib(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(BIN / "model-lib"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)


def test_installed_wheel_trains_through_the_toolkit_and_the_model_predicts(tmp_path):
    import model_lib as installed

    assert "site-packages" in installed.__file__, "tox -e local must test the built wheel, not the source tree"
    (tmp_path / "params.yaml").write_text(PARAMS, encoding="utf-8")
    for stage in ("ingest", "prepare"):
        result = run_model_lib(stage, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    job = run_model_lib("sagemaker-local", "--source-dir", str(REPO / "entry_point"), cwd=tmp_path)
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
    model_path = tmp_path / "sagemaker-local" / "model" / "model.keras"
    assert f"model:   {model_path.parent}\n" in job.stdout

    from model_lib.inference import load_model, predict

    probabilities = predict(load_model(model_path), ["A wonderful, moving film.", "Dull and far too long."])
    assert probabilities.shape == (2,) and ((probabilities >= 0) & (probabilities <= 1)).all()


def test_failing_job_exits_non_zero_with_the_reason(tmp_path):
    (tmp_path / "params.yaml").write_text(PARAMS, encoding="utf-8")
    job = run_model_lib("sagemaker-local", "--source-dir", str(REPO / "entry_point"), cwd=tmp_path)
    assert job.returncode == 2 and "run `dvc repro prepare`" in job.stderr
