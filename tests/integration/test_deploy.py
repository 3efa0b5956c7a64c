"""`model-lib deploy` against a real moto server and a real `mlflow server`: a Completed training job
(tests/standins/fake_sagemaker.py) with a tiny model.tar.gz in S3 (deploy never opens it), its image
in ECR, and a registered MLflow version whose run names the job, as a job's entry point tags it.

moto 5.2.5 has no UpdateEndpoint: this module answers it as SageMaker does once an update is done
(the endpoint serves the new config). moto's endpoints are InService and its transform jobs
Completed as soon as they are created."""

import io
import json
import tarfile

import pytest
from moto.core.responses import ActionResult
from moto.sagemaker.responses import SageMakerResponse

from model_lib.cli import main
from model_lib.tracking.registered import JOB_NAME_TAG

pytestmark = [pytest.mark.integration]

TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
REPOSITORY = "model-lib-deploy"
BUCKET = "model-lib-deploy-tests"
JOB, RUNNING_JOB = "model-lib-20250101-120000", "model-lib-20250101-130000"
REGISTERED = "imdb-deploy"


def update_endpoint(response: SageMakerResponse) -> ActionResult:
    """UpdateEndpoint, done at once: the endpoint serves the new config (ValidationError for an unknown one)."""
    backend, name = response.sagemaker_backend, response._get_param("EndpointName")
    config = backend.describe_endpoint_config(response._get_param("EndpointConfigName"))
    endpoint = backend.endpoints[name]
    endpoint.endpoint_config_name = config["EndpointConfigName"]
    endpoint.production_variants = endpoint._process_production_variants(config["ProductionVariants"])
    return ActionResult({"EndpointArn": endpoint.arn})


def tiny_archive() -> bytes:
    data, buffer = b'{"test": {"accuracy": 0.5}}', io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("metrics.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def hosting(moto_server, fake_sagemaker, mlflow_server):
    """A Completed job (its model.tar.gz in S3, its image in ECR), one still InProgress, and version 1 of
    a registered model whose run names the Completed job; UpdateEndpoint answered (see the docstring)."""
    import boto3
    import mlflow

    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    s3, ecr, iam, sm = (session.client(name, endpoint_url=moto_server) for name in ("s3", "ecr", "iam", "sagemaker"))
    s3.create_bucket(Bucket=BUCKET)
    role = iam.create_role(RoleName="sm-deploy-tests", AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]
    repository = ecr.create_repository(repositoryName=REPOSITORY)["repository"]["repositoryUri"]
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"})
    ecr.put_image(repositoryName=REPOSITORY, imageManifest=manifest, imageTag="cpu-abc1234")
    image = f"{repository}:cpu-abc1234"
    for name in (JOB, RUNNING_JOB):
        sm.create_training_job(
            TrainingJobName=name,
            AlgorithmSpecification={"TrainingImage": image, "TrainingInputMode": "File"},
            RoleArn=role,
            OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/jobs"},
            ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            StoppingCondition={"MaxRuntimeInSeconds": 3600},
        )
    s3.put_object(Bucket=BUCKET, Key=f"jobs/{JOB}/output/model.tar.gz", Body=tiny_archive())
    fake_sagemaker.end(JOB, "Completed", seconds=60)
    s3.put_object(Bucket=BUCKET, Key="reviews/part-0.txt", Body=b"a wonderful film\na dull film\n")

    client = mlflow.MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    experiment = client.create_experiment("deploy-tests")
    trained = client.create_run(experiment, tags={JOB_NAME_TAG: JOB}).info.run_id
    local = client.create_run(experiment).info.run_id  # a run trained here: no job, no model.tar.gz
    client.create_registered_model(REGISTERED)
    for run in (trained, local):
        client.create_model_version(REGISTERED, source=f"s3://{BUCKET}/mlflow/{run}", run_id=run)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SageMakerResponse, "update_endpoint", update_endpoint, raising=False)
        yield {"sm": sm, "s3": s3, "image": image, "role": role, "mlflow": mlflow_server}


@pytest.fixture
def deploy(hosting, aws_env, monkeypatch, capsys):
    """Run `model-lib deploy ARGS` in this process; return (exit code, stdout, stderr)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", hosting["mlflow"])
    monkeypatch.setenv("MODEL_LIB_POLL_SECONDS", "0.1")

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["deploy", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_a_registered_version_becomes_an_endpoint_in_service_on_the_jobs_image(deploy, hosting):
    code, out, err = deploy(f"models:/{REGISTERED}/1", "--instance-type", "ml.c5.xlarge", "--env", "WORKERS=2", "--wait")
    assert code == 0, err
    assert f"deploy: endpoint {REGISTERED}-v1 InService" in out
    sm = hosting["sm"]
    endpoint = sm.describe_endpoint(EndpointName=f"{REGISTERED}-v1")
    assert endpoint["EndpointStatus"] == "InService"
    (variant,) = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])["ProductionVariants"]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.c5.xlarge", 1)
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["Image"] == hosting["image"]
    assert model["PrimaryContainer"]["ModelDataUrl"] == f"s3://{BUCKET}/jobs/{JOB}/output/model.tar.gz"
    assert model["PrimaryContainer"]["Environment"] == {"WORKERS": "2"}
    assert model["ExecutionRoleArn"] == hosting["role"]


def test_an_existing_endpoint_is_refused_without_update_and_moved_with_it(deploy, hosting):
    name = "deploy-update-test"
    assert deploy("--job", JOB, "--endpoint-name", name)[0] == 0
    code, _, err = deploy("--job", JOB, "--endpoint-name", name, "--instance-count", "2")
    assert code == 2 and f"endpoint {name} exists (InService, config " in err and "pass --update" in err
    code, out, err = deploy("--job", JOB, "--endpoint-name", name, "--instance-count", "2", "--update", "--wait")
    assert code == 0 and "sent CreateEndpointConfig, UpdateEndpoint" in out, err
    config = hosting["sm"].describe_endpoint(EndpointName=name)["EndpointConfigName"]
    (variant,) = hosting["sm"].describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]
    assert variant["InitialInstanceCount"] == 2
    code, out, _ = deploy("--job", JOB, "--endpoint-name", name, "--instance-count", "2", "--update")
    assert code == 0 and "sent nothing: it is deployed already" in out


def test_a_serverless_endpoint_has_memory_and_concurrency(deploy, hosting):
    code, _, err = deploy(
        "--job", JOB, "--endpoint-name", "deploy-serverless", "--serverless-memory", "2048", "--max-concurrency", "3"
    )
    assert code == 0, err
    config = hosting["sm"].describe_endpoint(EndpointName="deploy-serverless")["EndpointConfigName"]
    (variant,) = hosting["sm"].describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 3}


def test_a_batch_transform_over_a_prefix_is_created_and_followed(deploy, hosting):
    archive = f"s3://{BUCKET}/jobs/{JOB}/output/model.tar.gz"
    code, out, err = deploy(
        archive, "--batch-input", f"s3://{BUCKET}/reviews/", "--batch-output", f"s3://{BUCKET}/scores/", "--wait"
    )
    assert code == 0, err
    assert f"-> s3://{BUCKET}/scores/" in out and " Completed " in out
    name = out.split("deploy: transform job ", 1)[1].split()[0]
    job = hosting["sm"].describe_transform_job(TransformJobName=name)
    assert job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{BUCKET}/reviews/"
    assert (job["TransformInput"]["SplitType"], job["TransformInput"]["ContentType"]) == ("Line", "text/plain")
    assert job["TransformResources"] == {"InstanceType": "ml.m5.large", "InstanceCount": 1}
    assert hosting["sm"].describe_model(ModelName=job["ModelName"])["PrimaryContainer"]["ModelDataUrl"] == archive
    code, _, err = deploy(archive, "--batch-input", f"s3://{BUCKET}/reviews/", "--batch-output", f"s3://{BUCKET}/scores/")
    assert code == 2 and f"transform job {name} exists (Completed)" in err


def test_dry_run_prints_every_request_and_sends_none(deploy, hosting):
    # A variable of its own: a model no other test made (the same model and config are reused, not sent again).
    code, out, err = deploy("--job", JOB, "--endpoint-name", "deploy-dry-run", "--env", "DRY=1", "--dry-run")
    assert code == 0, err
    steps = json.loads(out)
    assert [step["Operation"] for step in steps] == ["CreateModel", "CreateEndpointConfig", "CreateEndpoint"]
    assert steps[2]["Request"]["EndpointName"] == "deploy-dry-run"
    assert steps[0]["Request"]["PrimaryContainer"]["Image"] == hosting["image"]
    names = [e["EndpointName"] for e in hosting["sm"].list_endpoints()["Endpoints"]]
    assert "deploy-dry-run" not in names
    models = [m["ModelName"] for m in hosting["sm"].list_models()["Models"]]
    assert steps[0]["Request"]["ModelName"] not in models


@pytest.mark.parametrize(
    "args,expected",
    [
        ((f"models:/{REGISTERED}/9",), f"models:/{REGISTERED}/9: no such registered model version at http://127.0.0.1:"),
        ((f"models:/{REGISTERED}/2",), f"models:/{REGISTERED}/2: run "),
        (("--job", "no-such-job"), "--job no-such-job: no training job 'no-such-job' in SageMaker"),
        (("--job", RUNNING_JOB), f"training job {RUNNING_JOB} is InProgress; only a Completed job has a model to deploy"),
        ((f"s3://{BUCKET}/elsewhere/model.tar.gz", "--image-uri", "x/y:z"), "no training job claims this archive, so no role"),
        ((f"s3://{BUCKET}/jobs/{JOB}/output/model.tar.gz", "--image-uri", "r/model-lib-deploy:gone"), "not in ECR"),
        (("--job", JOB, "--batch-input", f"s3://{BUCKET}/empty/", "--batch-output", f"s3://{BUCKET}/o/"), "no objects under it"),
    ],
)
def test_a_source_without_a_model_to_serve_is_named_and_exit_2(deploy, args, expected):
    code, out, err = deploy(*args)
    assert code == 2 and expected in err and out == "", err
