"""git_dirty: what a run's lineage says about the code it was trained from."""

from __future__ import annotations

import subprocess

import pytest

from model_lib.tracking import git_state

DVC_YAML = """stages:
  train:
    cmd: model-lib train
    outs:
      - models/model.keras
      - models/history.json:
          cache: false
    metrics:
      - reports/metrics.json:
          cache: false
"""


@pytest.fixture
def committed_repo(tmp_path, monkeypatch):
    """A committed git repo with a dvc.yaml, a tracked metrics file and params.yaml."""
    (tmp_path / "reports").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 6\n")
    (tmp_path / "reports" / "metrics.json").write_text('{"accuracy": 0.9}\n')
    (tmp_path / "models" / "history.json").write_text('{"history": []}\n')
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "c"]):
        subprocess.run(command, cwd=tmp_path, check=True, capture_output=True)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    return tmp_path


def test_a_committed_tree_is_clean(committed_repo):
    assert git_state(committed_repo)["git_dirty"] == "false"


def test_outputs_dvc_removed_before_its_stage_do_not_make_a_stage_dirty(committed_repo, monkeypatch):
    (committed_repo / "models" / "history.json").unlink()  # what DVC does before running the stage
    (committed_repo / "reports" / "metrics.json").unlink()
    (committed_repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # rewritten after a stage
    assert git_state(committed_repo)["git_dirty"] == "true"  # outside DVC: the tree differs
    monkeypatch.setenv("DVC_STAGE", "train")
    assert git_state(committed_repo)["git_dirty"] == "false"


def test_a_changed_param_makes_a_stage_dirty(committed_repo, monkeypatch):
    monkeypatch.setenv("DVC_STAGE", "train")
    (committed_repo / "params.yaml").write_text("train:\n  epochs: 2\n")
    assert git_state(committed_repo)["git_dirty"] == "true"


def test_outside_git_the_state_is_unknown(tmp_path):
    assert git_state(tmp_path) == {"git_commit": "unknown", "git_short": "unknown", "git_dirty": "unknown"}


def test_a_dvc_experiment_names_its_run_and_its_sweep():
    from model_lib.errors import ConfigError
    from model_lib.tracking.lineage import experiment_tags

    queued = {"DVC_EXP_NAME": "sappy-yarn", "DVC_EXP_BASELINE_REV": "0123456789abcdef"}
    tags = experiment_tags(queued)
    assert tags == {"dvc_experiment": "sappy-yarn", "dvc_baseline": "0123456789abcdef", "sweep": "dvc-exp-0123456"}
    assert experiment_tags({**queued, "MODEL_LIB_SWEEP": "lr sweep 2"})["sweep"] == "lr sweep 2"
    assert experiment_tags({}) == {}  # a plain `dvc repro` or `model-lib train`
    with pytest.raises(ConfigError, match=r"MODEL_LIB_SWEEP='a\\nb': expected 1-128 letters"):
        experiment_tags({"MODEL_LIB_SWEEP": "a\nb"})
