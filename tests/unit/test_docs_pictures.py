"""The cheap parts of `make docs-picture` (docs/render_pictures.py): the pages it opens, how it keeps off the network."""

import pytest

from docs import browser, comparison_runs, mlflow_pages


def test_run_page_opens_the_tab_in_the_model_training_view():
    url = mlflow_pages.run_page(5000, "1", "abc", "system-metrics")
    assert url == f"http://{mlflow_pages.UI_HOST}:5000/#/experiments/1/runs/abc/system-metrics?workflowType=machine_learning"


def test_run_page_overview_is_the_run_address_itself():
    assert mlflow_pages.run_page(5000, "1", "abc").startswith(f"http://{mlflow_pages.UI_HOST}:5000/#/experiments/1/runs/abc?")


def test_run_page_opens_one_artifact():
    url = mlflow_pages.run_page(5000, "1", "abc", "artifacts/figures/roc.png")
    assert "/runs/abc/artifacts/figures/roc.png?" in url


def test_run_page_refuses_a_tab_the_ui_lacks():
    with pytest.raises(ValueError, match="run page tab: expected one of overview, .* got 'metrics'"):
        mlflow_pages.run_page(5000, "1", "abc", "metrics")


def test_runs_chart_page_compares_the_experiments_runs_in_chart_view():
    url = mlflow_pages.runs_chart_page(5000, "7")
    assert url.startswith(f"http://{mlflow_pages.UI_HOST}:5000/#/experiments/7/runs?") and "compareRunsMode=CHART" in url


def test_the_ui_host_is_not_one_mlflow_offers_its_assistant_to():
    # MLflow's UI shows the assistant to localhost, 127.0.0.1 and ::1 only (MLFLOW_ENABLE_REMOTE_ASSISTANT off).
    assert mlflow_pages.UI_HOST not in ("localhost", "127.0.0.1", "::1")


def test_host_rules_resolve_only_the_given_names():
    rules = browser.host_rules({mlflow_pages.UI_HOST: "127.0.0.1"})
    assert rules == f"MAP {mlflow_pages.UI_HOST} 127.0.0.1, MAP * ~NOTFOUND"
    assert browser.host_rules({}) == "MAP * ~NOTFOUND"


def test_variant_train_command_sets_each_override():
    command = comparison_runs.train_command({"train.epochs": "2", "train.glove_init": "false"})
    assert command[1:] == ["train", "-S", "train.epochs=2", "-S", "train.glove_init=false"]


def test_variant_runs_go_to_the_repos_store_named_after_the_variant(tmp_path):
    env = comparison_runs.variant_environment(tmp_path, "model-lib", "no-glove-init")
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path}/mlflow.db" and env["MLFLOW_EXPERIMENT_NAME"] == "model-lib"
    assert '"mlflow.runName": "no-glove-init"' in env["MODEL_LIB_MLFLOW_TAGS"]
