"""`model-lib deploy`'s pure parts: derived names, the requests it builds, the option checks at the
door (before AWS or MLflow is asked). Against moto: tests/integration/test_deploy.py."""

import re

import pytest

from model_lib.cli import main
from model_lib.sagemaker.deploy import DeployPlan, Source, derived_name, parse_environment
from model_lib.sagemaker.deploy_options import RESOURCE_NAME, DeployOptions

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/model-lib-training:cpu-abc1234"
ROLE = "arn:aws:iam::123456789012:role/model-lib-sagemaker-training"
DATA = "s3://bucket/jobs/model-lib-20250101-120000/output/model.tar.gz"


def deployment(**options) -> DeployPlan:
    source = Source(DATA, "imdb-v3", "models:/imdb/3", {"TrainingJobName": "model-lib-20250101-120000"})
    return DeployPlan(source, DeployOptions(**options), IMAGE, ROLE)


@pytest.mark.parametrize(
    "label,suffix",
    [("imdb.sentiment_model-v3", "0a1b2c3d"), ("x" * 100, "0a1b2c3d"), ("x" * 100, None), ("--a__b--", None), ("", None)],
)
def test_derived_names_are_valid_sagemaker_names(label, suffix):
    name = derived_name(label, suffix)
    assert RESOURCE_NAME.fullmatch(name) and len(name) <= 63
    assert suffix is None or name.endswith(f"-{suffix}")


def test_a_derived_name_keeps_what_sagemaker_takes_and_replaces_the_rest():
    assert derived_name("imdb.sentiment_model-v3") == "imdb-sentiment-model-v3"


def test_two_long_labels_that_start_alike_get_two_names():
    assert derived_name("a" * 70 + "1") != derived_name("a" * 70 + "2")


def test_names_are_the_same_for_the_same_deployment_and_change_with_it():
    assert deployment().model_name == deployment().model_name
    assert deployment().config_name == deployment().config_name
    assert deployment().endpoint_name == "imdb-v3"
    assert deployment(environment={"A": "1"}).model_name != deployment().model_name
    assert deployment(instance_count=2).config_name != deployment().config_name
    assert deployment(instance_count=2).model_name == deployment().model_name


def test_the_model_request_names_image_model_data_role_and_no_empty_environment():
    request = deployment().model_request()
    assert request["PrimaryContainer"] == {"Image": IMAGE, "ModelDataUrl": DATA}
    assert request["ExecutionRoleArn"] == ROLE
    assert {"Key": "model_lib.source", "Value": "models:/imdb/3"} in request["Tags"]


def test_an_instance_variant_has_type_count_and_the_whole_traffic():
    (variant,) = deployment(instance_type="ml.c5.xlarge", instance_count=2).endpoint_config_request()["ProductionVariants"]
    assert variant == {
        "VariantName": "AllTraffic",
        "ModelName": deployment().model_name,
        "InstanceType": "ml.c5.xlarge",
        "InitialInstanceCount": 2,
        "InitialVariantWeight": 1.0,
    }


def test_a_serverless_variant_has_memory_and_concurrency_and_no_instances():
    (variant,) = deployment(serverless_memory=2048, max_concurrency=3).endpoint_config_request()["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 3}
    assert "InstanceType" not in variant and "InitialInstanceCount" not in variant


def test_a_transform_splits_lines_of_the_prefix_and_assembles_lines():
    plan = deployment(batch_input="s3://bucket/reviews/", batch_output="s3://bucket/scores/", content_type="text/csv")
    request = plan.transform_request()
    assert request["TransformInput"] == {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket/reviews/"}},
        "ContentType": "text/csv",
        "SplitType": "Line",
    }
    assert request["TransformOutput"] == {"S3OutputPath": "s3://bucket/scores/", "AssembleWith": "Line"}
    assert request["ModelName"] == plan.model_name and RESOURCE_NAME.fullmatch(request["TransformJobName"])


@pytest.mark.parametrize(
    "options,expected",
    [
        ({"instance_type": "m5.large"}, "--instance-type 'm5.large': expected ml.<family>.<size>"),
        ({"instance_count": 0}, "--instance-count 0: expected 1..20"),
        ({"serverless_memory": 1000}, "--serverless-memory 1000: expected one of 1024, 2048"),
        ({"serverless_memory": 2048, "max_concurrency": 500}, "--max-concurrency 500: expected 1..200"),
        ({"max_concurrency": 3}, "--max-concurrency 3: needs --serverless-memory"),
        ({"serverless_memory": 2048, "instance_count": 2}, "--serverless-memory: a serverless endpoint has no instances"),
        ({"endpoint_name": "-bad_name"}, "--endpoint-name '-bad_name': expected 1-63 letters"),
        ({"image_uri": "not an image"}, "--image-uri 'not an image': expected <registry>/<repository>:<tag>"),
        ({"role_arn": "admin"}, "--role-arn 'admin': expected arn:aws:iam::<account>:role/<name>"),
        ({"batch_input": "s3://bucket/in/"}, "--batch-input: needs --batch-output s3://"),
        ({"batch_input": "/tmp/in", "batch_output": "s3://bucket/out/"}, "--batch-input '/tmp/in': expected s3://"),
        ({"batch_input": "s3://b1x/in/", "batch_output": "s3://b1x/o/", "update": True}, "--update: endpoint options"),
        ({"batch_input": "s3://b1x/in/", "batch_output": "s3://b1x/o/", "content_type": "json"}, "--content-type 'json'"),
        ({"content_type": "text/csv"}, "--content-type text/csv: needs --batch-input"),
    ],
)
def test_each_bad_option_is_named_with_its_value(options, expected):
    problems = DeployOptions(**options).problems()
    assert any(problem.startswith(expected) for problem in problems), problems


def test_the_defaults_have_no_problem():
    assert DeployOptions().problems() == []


@pytest.mark.parametrize(
    "item,expected",
    [
        ("NOEQUALS", "--env 'NOEQUALS': expected KEY=VALUE"),
        ("1X=a", "--env '1X=a': expected KEY=VALUE"),
        ("API_TOKEN=abc", "--env API_TOKEN: a name that says it holds a credential"),
        ("URL=https://user:pw@host/x", "--env URL: credentials (user:password@) in a URI"),
    ],
)
def test_an_environment_item_that_is_malformed_or_a_credential_is_refused(item, expected):
    from model_lib.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_environment([item])


def test_an_environment_item_is_a_variable():
    assert parse_environment(["WORKERS=2", "LOG=a=b"]) == {"WORKERS": "2", "LOG": "a=b"}


def test_bad_options_exit_2_with_every_problem_before_aws_is_asked(capsys, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing answers there: asking it would fail otherwise
    code = main(["deploy", "--job", "j", "--instance-count", "0", "--serverless-memory", "100"])
    err = capsys.readouterr().err
    assert code == 2
    assert "model-lib deploy: error: the deployment was not started; 3 problem(s):" in err
    assert "--instance-count 0: expected 1..20" in err and "--serverless-memory 100: expected one of" in err


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["deploy"], "expected one source: models:/NAME/N, s3://.../model.tar.gz, or --job NAME"),
        (["deploy", "models:/imdb/latest"], "'models:/imdb/latest': expected models:/NAME/N"),
        (["deploy", "s3://bucket/model.keras"], "expected models:/NAME/N or s3://<bucket>/<key>.tar.gz"),
    ],
)
def test_a_bad_source_is_one_line_and_exit_2(capsys, monkeypatch, argv, expected):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.count("\n") == 1, err
