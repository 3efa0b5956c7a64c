"""The container contract: every hyperparameter encoding the SDK and toolkit produce, channels, errors."""

import json
import re

import pytest

from model_lib.config import TrainConfig, from_mapping
from model_lib.errors import ConfigError, SageMakerEnvironmentError
from model_lib.sagemaker.basedir import encode_hyperparameters
from model_lib.sagemaker.environment import SageMakerEnvironment, decode_hyperparameter, output_dir_for_failure
from tests.conftest import sagemaker_env


def config_from(env, argv=None):
    return from_mapping(TrainConfig, SageMakerEnvironment.from_env(env, argv).hyperparameters, "hyperparameters")


@pytest.mark.parametrize(
    "raw,value",
    [("3", 3), ('"seed_cnn"', "seed_cnn"), ("false", False), ("0.5", 0.5), ("seed_cnn", "seed_cnn"), ("False", "False")],
)
def test_json_encoded_hyperparameters_decode(raw, value):
    assert decode_hyperparameter(raw) == value


def test_sdk_encoding_round_trips_through_the_config():
    encoded = encode_hyperparameters({"epochs": 3, "model": "seed_cnn", "glove_init": False, "dropout": None})
    assert encoded == {"epochs": "3", "model": '"seed_cnn"', "glove_init": "false"}
    config = from_mapping(TrainConfig, {k: decode_hyperparameter(v) for k, v in encoded.items()}, "hp")
    assert (config.epochs, config.model, config.glove_init) == (3, "seed_cnn", False)


def test_sm_hps_keeps_types_and_drops_sdk_entries(tmp_path):
    env = sagemaker_env(tmp_path, hps={"epochs": 2, "glove_init": False, "sagemaker_program": "train.py"})
    config = config_from(env)
    assert config.epochs == 2 and config.glove_init is False


def test_false_string_argument_is_false(tmp_path):
    # The toolkit passes str(False) on the command line.
    config = config_from(sagemaker_env(tmp_path), ["--glove_init", "False", "--epochs", "4"])
    assert config.glove_init is False and config.epochs == 4


def test_model_argument_is_not_taken_for_model_dir(tmp_path):
    env = SageMakerEnvironment.from_env(sagemaker_env(tmp_path), ["--model", "seed_cnn"])
    assert env.hyperparameters == {"model": "seed_cnn"}
    assert env.model_dir == tmp_path / "model"


def test_unknown_hyperparameter_is_an_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="hyperparameters: unknown key 'epoch'"):
        config_from(sagemaker_env(tmp_path, hps={"epoch": 3}))


def test_wrong_type_hyperparameter_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="hyperparameters.epochs: expected an integer, got 'three'"):
        config_from(sagemaker_env(tmp_path, hps={"epochs": "three"}))


def test_missing_variables_are_named_with_a_docker_hint():
    with pytest.raises(SageMakerEnvironmentError, match="SM_MODEL_DIR, SM_OUTPUT_DATA_DIR not set.*docker run"):
        SageMakerEnvironment.from_env({"SM_CHANNEL_TRAIN": "/data"})


def test_environment_fields(tmp_path):
    env = SageMakerEnvironment.from_env(
        {
            **sagemaker_env(tmp_path, {"train": tmp_path / "train"}),
            "SM_TRAINING_ENV": json.dumps({"job_name": "job-1"}),
        }
    )
    assert env.hosts == ["algo-1"] and env.current_host == "algo-1"
    assert (env.num_gpus, env.job_name) == (0, "job-1")
    assert env.checkpoint_dir == tmp_path / "checkpoints"
    assert output_dir_for_failure(sagemaker_env(tmp_path)) == tmp_path / "output"  # where the failure file goes


def test_a_tuning_trial_checkpoints_under_its_own_job_name(tmp_path):
    # Every trial shares its definition's one checkpoint prefix; a spot restart keeps the job's name.
    env = {**sagemaker_env(tmp_path), "SM_TRAINING_ENV": json.dumps({"job_name": "tune-1-002-ab12cd34"})}
    assert SageMakerEnvironment.from_env({**env, "MODEL_LIB_TUNING_JOB": "tune-1"}).checkpoint_dir == (
        tmp_path / "checkpoints" / "tune-1-002-ab12cd34"
    )
    assert SageMakerEnvironment.from_env(env).checkpoint_dir == tmp_path / "checkpoints"  # not a trial


def test_the_tuners_objective_hyperparameter_is_not_taken_for_ours(tmp_path):
    env = sagemaker_env(tmp_path, hps={"epochs": 2, "_tuning_objective_metric": "val_loss"})
    assert config_from(env, ["--_tuning_objective_metric", "val_loss", "--epochs", "2"]).epochs == 2


def test_channel_with_one_file_of_any_name(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    (folder / "4f1c2a9e").write_bytes(b"x")
    env = SageMakerEnvironment.from_env(sagemaker_env(tmp_path, {"train": folder}))
    assert env.channel("train").file == folder / "4f1c2a9e"


def test_missing_empty_and_crowded_channels_are_errors(tmp_path):
    empty, crowded = tmp_path / "empty", tmp_path / "crowded"
    empty.mkdir()
    crowded.mkdir()
    (crowded / "a").write_bytes(b"1")
    (crowded / "b").write_bytes(b"2")
    env = SageMakerEnvironment.from_env(sagemaker_env(tmp_path, {"test": empty, "vocab": crowded}))
    with pytest.raises(SageMakerEnvironmentError, match="channel 'train' is missing"):
        env.channel("train")
    with pytest.raises(SageMakerEnvironmentError, match="channel 'test': .* is empty; expected one file"):
        _ = env.channel("test").file
    with pytest.raises(SageMakerEnvironmentError, match="channel 'vocab': .* holds 2 files \\(a, b\\); expected one"):
        _ = env.channel("vocab").file


def test_one_host_is_the_degenerate_cluster(tmp_path):
    cluster = SageMakerEnvironment.from_env(sagemaker_env(tmp_path)).cluster
    assert cluster.hosts == ("algo-1",) and cluster.coordinator == "algo-1"
    assert (cluster.process_id, cluster.num_processes, cluster.is_coordinator, cluster.multi_host) == (0, 1, True, False)
    assert cluster.gpus_per_host == 0  # no GPU: the CPU


def test_the_first_host_coordinates_and_process_ids_follow_the_host_order(tmp_path):
    env = {
        **sagemaker_env(tmp_path),
        "SM_HOSTS": '["algo-1", "algo-2", "algo-3"]',
        "SM_CURRENT_HOST": "algo-3",
        "SM_NUM_GPUS": "4",
        "MODEL_LIB_COORDINATOR_PORT": "6000",
        "MODEL_LIB_HEARTBEAT_SECONDS": "20",
    }
    cluster = SageMakerEnvironment.from_env(env).cluster
    assert cluster.coordinator_address == "algo-1:6000" and cluster.heartbeat_seconds == 20
    assert (cluster.process_id, cluster.num_processes, cluster.is_coordinator, cluster.multi_host) == (2, 3, False, True)
    assert cluster.gpus_per_host == 4


@pytest.mark.parametrize(
    "variables,message",
    [
        ({"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-9"}, "SM_CURRENT_HOST: 'algo-9' is not one of SM_HOSTS"),
        ({"SM_HOSTS": '["algo-1", "algo-1"]'}, "SM_HOSTS: host names must be distinct"),
        ({"SM_HOSTS": '"algo-1"'}, "SM_HOSTS: expected a JSON list of host names, got '\"algo-1\"'"),
        ({"MODEL_LIB_COORDINATOR_PORT": "70000"}, "MODEL_LIB_COORDINATOR_PORT: expected 1..65535, got 70000"),
        ({"MODEL_LIB_HEARTBEAT_SECONDS": "soon"}, "MODEL_LIB_HEARTBEAT_SECONDS: expected an integer, got 'soon'"),
    ],
)
def test_a_bad_cluster_description_names_the_variable_and_value(tmp_path, variables, message):
    with pytest.raises(SageMakerEnvironmentError, match=re.escape(message)):
        _ = SageMakerEnvironment.from_env({**sagemaker_env(tmp_path), **variables}).cluster
