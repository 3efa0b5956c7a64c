"""What a SageMaker job costs: the price lookup (Price List API, else the shipped table), the cost of a
finished job (spot and on demand, several instances), and `--max-cost` refusing a job before anything is sent."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def _session():
    import boto3

    return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")


def test_the_price_table_has_its_date_region_and_source_and_prices_every_instance_type_the_readme_names():
    from model_lib.sagemaker.cost import PRICE_TABLE, table_price

    table = json.loads(PRICE_TABLE.read_text(encoding="utf-8"))
    assert table["region"] == "us-east-1" and table["as_of"] and "check the Price List API" in table["source"]
    named = set(re.findall(r"\bml\.[a-z][a-z0-9-]*\.[a-z0-9]+\b", README))
    assert named, "the README names no instance type"
    for instance_type in named:
        found = table_price(instance_type)
        assert found is not None and found.usd_per_hour > 0, instance_type
    # The README's families "ml.p*/ml.g*": at least one size of each GPU family SageMaker trains on.
    assert {"ml.g4dn.xlarge", "ml.g5.xlarge", "ml.p3.2xlarge"} <= set(table["usd_per_hour"])


def test_an_unpriced_instance_type_has_no_table_price():
    from model_lib.sagemaker.cost import table_price

    assert table_price("ml.zz9.plural") is None


def test_an_unreachable_price_list_api_falls_back_to_the_table_and_says_so(monkeypatch):
    """moto (5.2) does not implement the pricing service: only the fallback is tested here."""
    from model_lib.sagemaker.cost import API_SOURCE, price

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    found = price("ml.m5.xlarge", "us-east-1", _session())
    assert found is not None and found.source != API_SOURCE
    assert found.usd_per_hour == 0.23 and "table as of" in found.source and found.region == "us-east-1"


def test_the_price_list_apis_training_price_is_read_from_its_product_json():
    from model_lib.sagemaker.cost import _api_usd_per_hour

    def product(usage: str, usd: str) -> str:
        dimension = {"unit": "Hrs", "pricePerUnit": {"USD": usd}}
        terms = {"OnDemand": {"T1": {"priceDimensions": {"D1": dimension}}}}
        return json.dumps({"product": {"attributes": {"usagetype": usage}}, "terms": terms})

    assert _api_usd_per_hour(product("USE1-Train:ml.m5.xlarge", "0.2300000000"), "ml.m5.xlarge") == 0.23
    assert _api_usd_per_hour(product("USE1-Host:ml.m5.xlarge", "0.23"), "ml.m5.xlarge") is None
    assert _api_usd_per_hour(product("USE1-Train:ml.m5.xlarge", "0.0000000000"), "ml.m5.xlarge") is None


def _described(training: int, billable: int, count: int = 1, spot: bool = False) -> dict:
    return {
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": count, "VolumeSizeInGB": 30},
        "TrainingTimeInSeconds": training,
        "BillableTimeInSeconds": billable,
        "EnableManagedSpotTraining": spot,
    }


def test_an_on_demand_job_costs_its_billed_hours_times_the_price_times_the_instances_and_saves_nothing():
    from model_lib.sagemaker.cost import Price, job_cost

    cost = job_cost(_described(1800, 1800, count=2), Price("ml.m5.xlarge", 0.5, "us-east-1", "test"))
    assert cost.cost_usd == pytest.approx(0.5) and cost.spot_saving_usd == 0
    assert cost.metrics() == {"cost_usd": 0.5, "spot_saving_usd": 0.0}


def test_a_spot_job_costs_its_billable_seconds_and_saves_the_rest_of_its_training_seconds():
    from model_lib.sagemaker.cost import Price, job_cost

    cost = job_cost(_described(3600, 1200, count=3, spot=True), Price("ml.m5.xlarge", 0.9, "us-east-1", "test"))
    assert cost.cost_usd == pytest.approx(1200 / 3600 * 0.9 * 3)
    assert cost.spot_saving_usd == pytest.approx(2400 / 3600 * 0.9 * 3)
    assert "spot saved $1.8000" in cost.describe() and "3 x ml.m5.xlarge" in cost.describe()


def test_a_described_job_is_priced_from_the_table_when_the_api_does_not_answer(monkeypatch):
    from model_lib.sagemaker.cost import described_job_cost

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    cost = described_job_cost(_described(3600, 3600), _session())
    assert cost is not None and cost.cost_usd == pytest.approx(0.23) and "table as of" in cost.price.source


@pytest.mark.parametrize(
    "given,message",
    [
        (
            {"max_cost": 5, "instance_type": "ml.p3.16xlarge", "max_run": 3600},
            "--max-cost 5: the job could cost $28.15 (1 x ml.p3.16xlarge at $28.152/h for --max-run 3600s)",
        ),
        (  # spot bills training seconds only, up to --max-run: --max-wait does not raise the figure
            {"max_cost": 0.5, "instance_count": 4, "spot": True, "max_run": 3600, "max_wait": 7200},
            "--max-cost 0.5: the job could cost $0.92 (4 x ml.m5.xlarge at $0.23/h for --max-run 3600s)",
        ),
        ({"max_cost": 1, "instance_type": "ml.zz9.plural"}, "--max-cost 1: no price known for --instance-type ml.zz9.plural"),
        ({"max_cost": 0}, "--max-cost 0: expected a positive number of US dollars"),
    ],
)
def test_max_cost_names_the_figure_or_the_unpriced_instance_type(given, message):
    from model_lib.sagemaker.options import LaunchOptions

    problems = LaunchOptions(**given).problems()
    assert len(problems) == 1 and message in problems[0], problems


def test_a_job_whose_worst_case_fits_max_cost_passes():
    from model_lib.sagemaker.options import LaunchOptions

    assert LaunchOptions(max_cost=0.25, max_run=3600).problems() == []
    assert LaunchOptions(max_cost=0.22, max_run=3600).problems() != []


def test_launch_refuses_a_job_over_max_cost_with_every_other_problem_and_exit_2(tmp_path):
    """The real CLI in a folder with no Terraform outputs or DVC remote: --max-cost is listed with them."""
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 1\n", encoding="utf-8")
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_DEFAULT_REGION": "us-east-1"}
    command = [sys.executable, "-m", "model_lib.cli", "launch", "--dry-run", "--instance-type", "ml.g5.12xlarge"]
    command += ["--instance-count", "2", "--max-run", "7200", "--max-cost", "20", "--job-name", "bad_name"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stdout == "", result.stderr[-3000:]
    assert "--max-cost 20: the job could cost $28.36 (2 x ml.g5.12xlarge at $7.09/h for --max-run 7200s)" in result.stderr
    assert "--job-name 'bad_name'" in result.stderr and "Traceback" not in result.stderr


def test_the_remote_train_stage_refuses_a_job_over_max_cost_from_the_launch_options_variable(tmp_path):
    """MODEL_LIB_LAUNCH_OPTIONS carries --max-cost: refused before the stage pushes anything."""
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 1\n", encoding="utf-8")
    env = {
        **os.environ,
        "MODEL_LIB_TRAIN_ON": "sagemaker",
        "MODEL_LIB_LAUNCH_OPTIONS": "--instance-type ml.p3.2xlarge --max-cost 3",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [sys.executable, "-m", "model_lib.cli", "train"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stdout == "", result.stderr[-3000:]
    assert "--max-cost 3: the job could cost $91.80 (1 x ml.p3.2xlarge at $3.825/h for --max-run 86400s)" in result.stderr
