"""Configs: every bad value is an error naming the key, the value and what was expected."""

import subprocess
import sys
from pathlib import Path

import pytest

from model_lib.config import (
    TrainConfig,
    check_train_fits_data,
    effective_hyperparameters,
    from_mapping,
    load_section,
    parse_overrides,
)
from model_lib.errors import ConfigError


def write_params(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_section_loads_with_documented_defaults(tmp_path):
    config = load_section("train", write_params(tmp_path, "train:\n  epochs: 3\n"))
    assert config.epochs == 3
    assert config.model == "ngram_glove" and config.seed == 42 and config.glove_init is True


def test_false_string_hyperparameter_is_false():
    for spelling in ("False", "false", "FALSE"):
        assert from_mapping(TrainConfig, {"glove_init": spelling}, "hp").glove_init is False
    assert from_mapping(TrainConfig, {"glove_init": "True"}, "hp").glove_init is True


def test_other_strings_are_not_booleans():
    with pytest.raises(ConfigError, match=r"hp\.glove_init: expected true or false, got 'no'"):
        from_mapping(TrainConfig, {"glove_init": "no"}, "hp")


def test_numbers_given_as_strings_are_typed():
    config = from_mapping(TrainConfig, {"epochs": "3", "learning_rate": "0.01", "dropout": "null"}, "hp")
    assert (config.epochs, config.learning_rate, config.dropout) == (3, 0.01, None)


def test_wrong_type_names_key_and_value(tmp_path):
    params = write_params(tmp_path, "train:\n  epochs: three\n")
    with pytest.raises(ConfigError) as error:
        load_section("train", params)
    assert str(error.value) == f"{params}: train.epochs: expected an integer, got 'three'"


def test_unknown_key_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"train: unknown key 'epoch'; expected one of .*epochs"):
        load_section("train", write_params(tmp_path, "train:\n  epoch: 3\n"))


@pytest.mark.parametrize(
    "key,value",
    [("epochs", 0), ("batch_size", -1), ("validation_split", 1.5), ("ngram_buckets", 2128328), ("checkpoint_steps", -1)],
)
def test_out_of_range_values_are_errors(tmp_path, key, value):
    with pytest.raises(ConfigError, match=rf"train\.{key}: expected .*got {value}"):
        load_section("train", write_params(tmp_path, f"train:\n  {key}: {value}\n"))


def test_choice_outside_list_is_an_error():
    with pytest.raises(ConfigError, match=r"hp\.model: expected one of ngram_glove, seed_cnn, got 'cnn'"):
        from_mapping(TrainConfig, {"model": "cnn"}, "hp")


def test_missing_file_and_section_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_section("train", tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="missing section 'train'"):
        load_section("train", write_params(tmp_path, "prepare:\n  seed: 1\n"))


def test_overrides_win_over_the_file(tmp_path):
    params = write_params(tmp_path, "train:\n  epochs: 3\n")
    assert load_section("train", params, parse_overrides(["train.epochs=7"])["train"]).epochs == 7


def test_malformed_override_is_an_error():
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_overrides(["epochs"])
    with pytest.raises(ConfigError, match="unknown section 'trian'"):
        parse_overrides(["trian.epochs=2"])


def test_defaults_come_from_the_models_registry_entry():
    from model_lib import registry

    for name in registry.names():
        hp = effective_hyperparameters(TrainConfig(model=name))
        defaults = registry.get(name).defaults
        assert (hp["epochs"], hp["batch_size"], hp["learning_rate"], hp["clipnorm"]) == (
            defaults.epochs,
            defaults.batch_size,
            defaults.learning_rate,
            defaults.clipnorm,
        )
    assert effective_hyperparameters(TrainConfig(model="seed_cnn", epochs=2))["epochs"] == 2


def test_seed_cnn_on_reviews_of_another_length_names_the_key_and_the_fix():
    expected = (
        r"train.model: 'seed_cnn' needs reviews encoded to 1000 tokens \(its pooling is 5/5/35\), but the prepared "
        r"data have 40; set prepare.max_length: 1000 or use model ngram_glove"
    )
    with pytest.raises(ConfigError, match=expected):
        check_train_fits_data(TrainConfig(model="seed_cnn"), (100, 40))
    check_train_fits_data(TrainConfig(model="seed_cnn"), (100, 1000))
    check_train_fits_data(TrainConfig(), (100, 40))


def test_config_registry_and_launch_import_neither_keras_nor_tensorflow():
    # `model-lib launch` follows jobs and must stay light: the config and the registry are all it reads.
    script = (
        "import sys, model_lib.config, model_lib.registry, model_lib.sagemaker.launch\n"
        "heavy = sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    repo = Path(__file__).resolve().parents[2]  # `python -c` imports from its working folder first: this checkout
    result = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
