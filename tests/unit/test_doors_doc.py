"""docs/doors.md lists every door: each command and option of `model-lib`, each params key and each
environment variable name the code holds. A door added without its row fails here."""

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from model_lib.cli import build_parser
from model_lib.config import SECTIONS
from tests.conftest import REPO

DOORS = REPO / "docs" / "doors.md"
# Environment variable names as the code writes them: ours, SageMaker's, MLflow's and those of the
# libraries we set or read (a prefix such as "SM_CHANNEL_" counts: the doc names SM_CHANNEL_<NAME>).
ENV_NAME = re.compile(r"^(?:(?:MODEL_LIB|SM|MLFLOW|SAGEMAKER|AWS|KERAS|TF|CUDA|DVC)_[A-Z0-9_]*|TRAINING_JOB_NAME)$")


def mentioned(name: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", DOORS.read_text(encoding="utf-8")) is not None


def env_names_in_code() -> set[str]:
    names = set()
    for root in ("model_lib", "entry_point"):
        for path in (REPO / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and ENV_NAME.match(node.value):
                    names.add(node.value)
    return names


def options_of(parser) -> list[str]:
    return [option for action in parser._actions for option in action.option_strings if option not in ("-h", "--help")]


def commands_and_options() -> list[tuple[str, str]]:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    found = [(command, command) for command in commands.choices]
    found += [(command, option) for command, sub in commands.choices.items() for option in options_of(sub)]
    return found + [("model-lib", option) for option in options_of(parser)]


def test_the_environment_variable_scan_finds_the_variables_we_know():
    assert {"MODEL_LIB_TRAIN_ON", "MODEL_LIB_MLFLOW_TAGS", "SM_HPS", "MLFLOW_TRACKING_URI"} <= env_names_in_code()


@pytest.mark.parametrize("name", sorted(env_names_in_code()))
def test_every_environment_variable_has_a_row(name):
    assert mentioned(name), f"{name} is read or set in the code but not in docs/doors.md"


@pytest.mark.parametrize("command,option", commands_and_options())
def test_every_command_and_option_has_a_row(command, option):
    assert mentioned(option), f"model-lib {command} {option} is not in docs/doors.md"


@pytest.mark.parametrize("key", [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)])
def test_every_params_key_has_a_row(key):
    assert f"`{key}`" in DOORS.read_text(encoding="utf-8"), f"params key {key} is not in docs/doors.md"


def test_the_readme_links_the_doors_inventory():
    assert "docs/doors.md" in Path(REPO / "README.md").read_text(encoding="utf-8")
