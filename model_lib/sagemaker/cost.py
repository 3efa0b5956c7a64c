"""What a SageMaker training job costs in dollars: the on-demand price of its instance type, times
its instance count, times the seconds SageMaker bills.

Prices come from the AWS Price List API (``pricing`` GetProducts, service code AmazonSageMaker) when
it answers within a few seconds, else from ``prices.json`` shipped in this package (us-east-1
on-demand list prices with their date and source); a :class:`Price` says which was used.

Spot: SageMaker bills ``BillableTimeInSeconds`` (the training seconds less the spot discount) at the
on-demand rate, so ``cost_usd`` is billable seconds x price x count and ``spot_saving_usd`` is what
the job's training seconds would have cost on demand less that. A spot job's training time is
bounded by ``max_run`` (``max_wait`` adds waiting for capacity, which is not billed), so the most a
job can cost is ``max_run`` x price x count, spot or not.

Standard library only at import: :mod:`model_lib.sagemaker.options` checks ``--max-cost`` with the
table for every command's parser; boto3 is imported only to ask the Price List API.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from functools import cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PRICE_TABLE = Path(__file__).with_name("prices.json")
PRICING_REGION = "us-east-1"  # the Price List API answers from us-east-1 (and two other regions) only
API_SOURCE = "AWS Price List API"
_API_TIMEOUT_SECONDS = 3


@dataclasses.dataclass(frozen=True)
class Price:
    """The on-demand price of one instance type for SageMaker training, and where it came from."""

    instance_type: str
    usd_per_hour: float
    region: str
    source: str  # API_SOURCE, or the table's source with its date


@dataclasses.dataclass(frozen=True)
class JobCost:
    """What a finished (or stopped) job cost: ``cost_usd`` billed, ``spot_saving_usd`` saved by spot."""

    cost_usd: float
    spot_saving_usd: float
    price: Price
    instance_count: int

    def metrics(self) -> dict[str, float]:
        """Return the cost as metrics: ``cost_usd`` and ``spot_saving_usd``, rounded to the cent's hundredth."""
        return {"cost_usd": round(self.cost_usd, 4), "spot_saving_usd": round(self.spot_saving_usd, 4)}

    def describe(self) -> str:
        """Return one line: the cost, the saving, the price and where it came from."""
        return (
            f"${self.cost_usd:.4f} (spot saved ${self.spot_saving_usd:.4f}; {self.instance_count} x "
            f"{self.price.instance_type} at ${self.price.usd_per_hour}/h, {self.price.region}, {self.price.source})"
        )


@cache
def _table() -> dict[str, Any]:
    return json.loads(PRICE_TABLE.read_text(encoding="utf-8"))


def table_price(instance_type: str) -> Price | None:
    """Return the shipped table's price for ``instance_type``, or None when the table does not list it."""
    table = _table()
    usd = table["usd_per_hour"].get(instance_type)
    if usd is None:
        return None
    return Price(instance_type, float(usd), table["region"], f"table as of {table['as_of']}")


def table_instance_types() -> list[str]:
    """Return the instance types the shipped table prices."""
    return sorted(_table()["usd_per_hour"])


def _api_usd_per_hour(product_json: str, instance_type: str) -> float | None:
    """Return the on-demand USD per hour of one Price List product if it is training on ``instance_type``."""
    product = json.loads(product_json)
    usage = product.get("product", {}).get("attributes", {}).get("usagetype", "")
    if not usage.endswith(f"Train:{instance_type}"):  # e.g. USE1-Train:ml.m5.xlarge (not Spot, not hosting)
        return None
    for term in product.get("terms", {}).get("OnDemand", {}).values():
        for dimension in term.get("priceDimensions", {}).values():
            usd = dimension.get("pricePerUnit", {}).get("USD")
            if usd is not None and float(usd) > 0:
                return float(usd)
    return None


def api_price(instance_type: str, region: str, boto_session: Any) -> Price | None:
    """Return the Price List API's on-demand training price, or None when it does not answer in a few
    seconds, answers an error (no credentials, no permission, an endpoint without the service) or
    lists no single price for the type."""
    from botocore.config import Config

    config = Config(connect_timeout=_API_TIMEOUT_SECONDS, read_timeout=_API_TIMEOUT_SECONDS, retries={"total_max_attempts": 1})
    filters = [
        {"Type": "TERM_MATCH", "Field": "regionCode", "Value": region},
        {"Type": "TERM_MATCH", "Field": "instanceName", "Value": instance_type},
    ]
    try:
        client = boto_session.client("pricing", region_name=PRICING_REGION, config=config)
        answer = client.get_products(ServiceCode="AmazonSageMaker", Filters=filters, MaxResults=100)
    except Exception as exc:  # botocore: unreachable, timed out, no credentials, denied, not implemented
        said = " ".join(str(exc).split())[:160]  # one short line: an endpoint without the service answers a page
        logger.info("the Price List API did not answer (%s: %s); using the shipped price table", type(exc).__name__, said)
        return None
    prices = {usd for item in answer.get("PriceList", []) if (usd := _api_usd_per_hour(item, instance_type)) is not None}
    if len(prices) != 1:
        logger.info(
            "the Price List API listed %d training prices for %s in %s; using the table", len(prices), instance_type, region
        )
        return None
    return Price(instance_type, prices.pop(), region, API_SOURCE)


def price(instance_type: str, region: str | None = None, boto_session: Any = None) -> Price | None:
    """Return the on-demand training price of ``instance_type``: the Price List API's when
    ``boto_session`` is given and it answers, else the table's (us-east-1); None when neither has one."""
    if boto_session is not None:
        found = api_price(instance_type, region or PRICING_REGION, boto_session)
        if found is not None:
            return found
    return table_price(instance_type)


def job_cost(described: dict[str, Any], price_of: Price) -> JobCost:
    """Return what the job in ``described`` (a DescribeTrainingJob answer) cost at ``price_of``.

    On demand, the billed seconds are ``BillableTimeInSeconds`` (else ``TrainingTimeInSeconds``) and
    nothing is saved; spot saves the training seconds' on-demand cost less the billed cost.
    """
    count = int(described.get("ResourceConfig", {}).get("InstanceCount", 1))
    training = described.get("TrainingTimeInSeconds") or 0
    billable = described.get("BillableTimeInSeconds")
    billable = training if billable is None else billable
    per_second = price_of.usd_per_hour / 3600 * count
    cost = billable * per_second
    saving = training * per_second - cost if described.get("EnableManagedSpotTraining") else 0.0
    return JobCost(cost_usd=cost, spot_saving_usd=max(saving, 0.0), price=price_of, instance_count=count)


def described_job_cost(described: dict[str, Any], boto_session: Any = None) -> JobCost | None:
    """Return what the described job cost (the API's price when it answers, else the table's), or None
    for an instance type no source prices."""
    instance_type = described.get("ResourceConfig", {}).get("InstanceType", "")
    region = getattr(boto_session, "region_name", None) if boto_session is not None else None
    found = price(instance_type, region, boto_session)
    if found is None:
        logger.warning("no price known for %s: the job's cost is not reported", instance_type)
        return None
    return job_cost(described, found)


def most_cost_problem(max_cost: float, instance_type: str, instance_count: int, max_run: int, trials: int = 1) -> str | None:
    """Return why ``trials`` jobs (a tuning job's; 1: one job) of ``instance_count`` x ``instance_type``
    for up to ``max_run`` seconds each break ``--max-cost`` (the table's price: checked before anything
    is asked of AWS), or None when they fit."""
    found = table_price(instance_type)
    if found is None:
        return (
            f"--max-cost {max_cost:g}: no price known for --instance-type {instance_type} (the shipped table, "
            f"{PRICE_TABLE.name}, prices {', '.join(table_instance_types())})"
        )
    per_job = max_run / 3600 * found.usd_per_hour * instance_count
    if per_job * trials <= max_cost:
        return None
    job = f"{instance_count} x {instance_type} at ${found.usd_per_hour}/h for --max-run {max_run}s"
    if trials == 1:
        return f"--max-cost {max_cost:g}: the job could cost ${per_job:.2f} ({job}); lower --max-run or raise --max-cost"
    return (
        f"--max-cost {max_cost:g}: the tuning job could cost ${per_job * trials:.2f} ({trials} trials x ${per_job:.2f}: "
        f"{job}); lower max_jobs or --max-run, or raise --max-cost"
    )


__all__ = [
    "API_SOURCE",
    "PRICE_TABLE",
    "JobCost",
    "Price",
    "described_job_cost",
    "job_cost",
    "most_cost_problem",
    "price",
    "table_price",
]
