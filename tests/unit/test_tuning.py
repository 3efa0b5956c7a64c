"""The tune: section as a user writes it: what is accepted, what is refused (naming the key), the local
search's draws, the winner written back into params.yaml, and the metric regexes on real training lines."""

import dataclasses
import logging
import math

import pytest
import yaml

from model_lib.cli import main
from model_lib.epoch_lines import METRICS, best_line, epoch_line, metric_definitions, read_metric
from model_lib.errors import ConfigError
from model_lib.tuning import apply_values, load_tune, parse_tune, sampled

TRAIN = {"model": "ngram_glove", "epochs": 4, "seed": 42}
RANGES = {"learning_rate": {"min": 0.0005, "max": 0.01, "scaling": "Logarithmic"}, "batch_size": {"values": [32, 64]}}


def tune(**changes):
    return parse_tune({"ranges": RANGES, **changes}, TRAIN)


def test_a_usual_search_is_read_with_sagemaker_defaults():
    search = tune()
    assert (search.objective, search.objective_type, search.strategy) == ("val_loss", "Minimize", "Bayesian")
    assert (search.max_jobs, search.max_parallel_jobs, search.early_stopping) == (10, 2, "Off")
    lr, batch = search.ranges
    assert (lr.kind, lr.low, lr.high, lr.scaling) == ("Continuous", 0.0005, 0.01, "Logarithmic")
    assert (batch.kind, batch.values) == ("Categorical", (32, 64))


def test_an_integer_key_gets_an_integer_range():
    (order,) = parse_tune({"ranges": {"ngram_order": {"min": 1, "max": 3}}}, TRAIN).ranges
    assert (order.kind, order.low, order.high) == ("Integer", 1, 3)


def test_a_bare_yaml_off_is_off():  # YAML 1.1 reads `early_stopping: Off` as false
    assert parse_tune(yaml.safe_load("early_stopping: Off\nranges: {dropout: {min: 0, max: 0.5}}"), TRAIN).early_stopping == "Off"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"ranges": {"epochz": {"min": 1, "max": 3}}}, "tune.ranges.epochz: unknown key 'epochz'; expected a key of train:"),
        ({"ranges": {"seed": {"min": 1, "max": 3}}}, "tune.ranges.seed: seed cannot be tuned: a search over seeds picks noise"),
        ({"ranges": {"nb_view_weight": {"min": 0, "max": 0.5}}}, "nb_view_weight cannot be tuned: the NB-SVM views"),
        ({"ranges": {"learning_rate": {"min": 0, "max": 0.1}}}, "learning_rate.min: expected a positive number, got 0"),
        ({"ranges": {"dropout": {"min": 0.1, "max": 1.0}}}, "tune.ranges.dropout.max: expected a number >= 0 and < 1, got 1.0"),
        ({"ranges": {"dropout": {"min": 0.5, "max": 0.1}}}, "tune.ranges.dropout: expected min < max"),
        ({"ranges": {"dropout": {"min": 0.0, "max": 0.5, "scaling": "Logarithmic"}}}, "Logarithmic needs min > 0"),
        ({"ranges": {"dropout": {"min": 0.0, "max": 0.5, "scaling": "Log"}}}, "tune.ranges.dropout.scaling: expected one of"),
        ({"ranges": {"batch_size": {"values": [32, "big"]}}}, "tune.ranges.batch_size.values[1]: expected an integer, got 'big'"),
        ({"ranges": {"model": {"values": ["ngram_glove", "bert"]}}}, "tune.ranges.model.values[1]: expected one of"),
        ({"ranges": {"model": {"min": 1, "max": 2}}}, "tune.ranges.model: model is not a number"),
        ({"ranges": {"dropout": {"min": 0.0}}}, "tune.ranges.dropout: expected both min and max"),
        ({"ranges": {"dropout": {"low": 0.0}}}, "tune.ranges.dropout: unknown key 'low'"),
        ({"ranges": {}}, "tune.ranges: expected a mapping of train: keys to ranges"),
        ({"ranges": RANGES, "objective": "accuracy"}, "tune.objective: expected one of val_loss, val_accuracy, val_auc"),
        ({"ranges": RANGES, "strategy": "Genetic"}, "tune.strategy: expected one of Bayesian, Random, Hyperband, Grid"),
        ({"ranges": RANGES, "max_jobs": 0}, "tune.max_jobs: expected an integer from 1 to 750, got 0"),
        ({"ranges": RANGES, "max_jobs": 2, "max_parallel_jobs": 3}, "tune.max_parallel_jobs: expected at most the 2 trials"),
        ({"ranges": RANGES, "strategy": "Grid"}, "learning_rate: Grid searches only values: [...] and integer ranges"),
        ({"ranges": {"batch_size": {"values": [32, 64]}}, "strategy": "Grid", "max_jobs": 2}, "Grid runs every combination (2)"),
        ({"ranges": RANGES, "strategy": "Hyperband", "early_stopping": "Auto"}, "Auto works with Bayesian and Random only"),
        ({"ranges": {"epochs": {"min": 1, "max": 5}}, "strategy": "Hyperband"}, "tune.ranges.epochs: Hyperband decides"),
        ({"ranges": RANGES, "strategy": "Hyperband", "min_epochs": 5}, "tune.min_epochs: expected at most train.epochs (4)"),
        ({"ranges": RANGES, "min_epochs": 2}, "tune.min_epochs: only Hyperband stops trials by epochs"),
        ({"ranges": RANGES, "trials": 3}, "tune: unknown key 'trials'"),
    ],
)
def test_a_bad_section_is_refused_naming_the_key(section, message):
    with pytest.raises(ConfigError) as caught:
        parse_tune(section, TRAIN, "params.yaml: tune")
    assert message in str(caught.value)


def test_grid_runs_every_combination_in_order():
    ranges = {"batch_size": {"values": [32, 64]}, "ngram_order": {"min": 2, "max": 3}}
    search = parse_tune({"strategy": "Grid", "ranges": ranges}, TRAIN)
    assert search.trials == 4 and search.max_jobs is None
    assert list(sampled(search, 0)) == [
        {"batch_size": 32, "ngram_order": 2},
        {"batch_size": 32, "ngram_order": 3},
        {"batch_size": 64, "ngram_order": 2},
        {"batch_size": 64, "ngram_order": 3},
    ]


def test_random_draws_stay_in_their_ranges_and_repeat_for_the_same_seed():
    search = tune(strategy="Random", max_jobs=50)
    draws = list(sampled(search, 7))
    assert len(draws) == 50 and draws == list(sampled(search, 7)) and draws != list(sampled(search, 8))
    assert all(0.0005 <= d["learning_rate"] <= 0.01 and d["batch_size"] in (32, 64) for d in draws)
    logs = [math.log(d["learning_rate"]) for d in draws]  # log-uniform: about as many below the log midpoint as above
    middle = (math.log(0.0005) + math.log(0.01)) / 2
    assert 15 <= sum(v < middle for v in logs) <= 35


def test_a_finite_space_is_not_drawn_twice():
    search = parse_tune({"strategy": "Random", "max_jobs": 10, "ranges": {"batch_size": {"values": [32, 64, 128]}}}, TRAIN)
    assert sorted(d["batch_size"] for d in sampled(search, 1)) == [32, 64, 128]


PARAMS = """\
# the project's params
train:                     # also the SageMaker hyperparameters
  model: ngram_glove       # ngram_glove | seed_cnn
  learning_rate: null
  batch_size: null
  seed: 42

tune:
  ranges:
    learning_rate: {min: 0.0005, max: 0.01}
"""


def test_apply_writes_the_values_and_keeps_the_comments(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    written = apply_values(params, {"learning_rate": 0.00123, "batch_size": 64})
    text = params.read_text()
    assert "learning_rate: 0.00123" in text and "batch_size: 64" in text
    assert "# the project's params" in text and "# ngram_glove | seed_cnn" in text and "{min: 0.0005, max: 0.01}" in text
    assert written["learning_rate"] == 0.00123
    search, train, _ = load_tune(params)
    assert train["batch_size"] == 64 and search.ranges[0].name == "learning_rate"


def test_apply_refuses_a_value_train_would_refuse_and_leaves_the_file(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    with pytest.raises(ConfigError, match=r"train.batch_size: expected a positive number, got -1"):
        apply_values(params, {"batch_size": -1})
    assert params.read_text() == PARAMS


def test_tune_with_a_bad_range_exits_2_before_anything_is_asked_of_aws(tmp_path, capsys, monkeypatch):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS.replace("min: 0.0005", "min: -1"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing answers there: must not be asked
    assert main(["tune", "--params", str(params), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"model-lib tune: error: {params}: tune.ranges.learning_rate.min: expected a positive number, got -1"


def test_the_shipped_params_have_a_valid_tune_section():
    search, _, _ = load_tune("params.yaml")
    assert search.objective == "val_loss" and {r.name for r in search.ranges} >= {"learning_rate"}


def test_each_metric_regex_reads_its_own_value_only():
    metrics = {"loss": 0.5, "accuracy": 0.75, "auc": 0.8, "val_loss": 0.25, "val_accuracy": 0.875, "val_auc": 0.9375}
    lines = ["INFO model_lib.training: " + epoch_line(0, 3, metrics, 1.5), "epoch 1/3: step 2 of 9: accuracy 0.5000"]
    for name in METRICS:
        assert read_metric(lines, name) == [metrics[name]]
    assert [d["Name"] for d in metric_definitions()] == list(METRICS)


def test_the_regexes_read_what_a_real_training_logs_and_the_kept_epoch_comes_last(tiny_prepared, caplog):
    from model_lib.config import TrainConfig
    from model_lib.prepared import load_prepared
    from model_lib.training import run
    from tests.conftest import TINY_TRAINING

    config = dataclasses.replace(TrainConfig(**TINY_TRAINING), epochs=3)
    with caplog.at_level(logging.INFO, logger="model_lib.training"):
        result = run(config, load_prepared(**tiny_prepared), verbose=2)
    lines = caplog.text.splitlines()
    best = result.history[result.best_epoch - 1]
    for name in METRICS:
        values = read_metric(lines, name)
        assert values[:-1] == [pytest.approx(row[name], abs=5e-7) for row in result.history]
        assert values[-1] == pytest.approx(best[name], abs=5e-7)  # a tuner takes the last: the kept weights'
    assert best_line(result.best_epoch - 1, 3, best) in caplog.text


def dry_run_request(search, parent_run_id=None):
    """The CreateHyperParameterTuningJob request for ``search`` around a hand-made trial job (nothing sent)."""
    import boto3

    from model_lib.sagemaker import tune
    from model_lib.sagemaker.launch import LaunchPlan
    from model_lib.sagemaker.options import LaunchOptions

    job = LaunchPlan(
        job_name="t-1",
        image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/train:cpu-abc1234",
        role_arn="arn:aws:iam::123456789012:role/sm",
        bucket="b-1",
        channels={"vocab": "s3://b-1/dvc/files/md5/ab/cdef0123456789abcdef0123456789"},
        hyperparameters={"epochs": 4, "model": "ngram_glove", "seed": 42},
        environment={"MODEL_LIB_MLFLOW_TAGS": '{"git_commit": "abc"}'},
        tags={},
        options=LaunchOptions(spot=True),
    )
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    return tune.start(tune.TunePlan("t-1", search, job, parent_run_id), session, dry_run=True)


def test_hyperband_gets_the_epochs_as_its_resource(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no user SageMaker SDK config
    search = parse_tune({"strategy": "Hyperband", "min_epochs": 2, "ranges": {"dropout": {"min": 0.0, "max": 0.5}}}, TRAIN)
    config = dry_run_request(search)["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Hyperband" and config["TrainingJobEarlyStoppingType"] == "Off"
    assert config["StrategyConfig"] == {"HyperbandStrategyConfig": {"MinResource": 2, "MaxResource": 4}}


def test_grid_leaves_the_count_to_sagemaker_and_choices_arrive_as_the_job_decodes_them(monkeypatch, tmp_path):
    from model_lib.sagemaker.environment import decode_hyperparameter

    monkeypatch.setenv("HOME", str(tmp_path))
    search = parse_tune({"strategy": "Grid", "ranges": {"model": {"values": ["ngram_glove", "seed_cnn"]}}}, TRAIN)
    request = dry_run_request(search, parent_run_id="abc123")
    config = request["HyperParameterTuningJobConfig"]
    assert "MaxNumberOfTrainingJobs" not in config["ResourceLimits"]
    (choices,) = config["ParameterRanges"]["CategoricalParameterRanges"]
    assert [decode_hyperparameter(v) for v in choices["Values"]] == ["ngram_glove", "seed_cnn"]
    environment = request["TrainingJobDefinition"]["Environment"]
    assert environment["MODEL_LIB_TUNING_JOB"] == "t-1"
    tags = yaml.safe_load(environment["MODEL_LIB_MLFLOW_TAGS"])
    assert tags == {"git_commit": "abc", "mlflow.parentRunId": "abc123", "sagemaker.tuning_job_name": "t-1"}
