"""The ``model-lib`` command: one subcommand per DVC stage, plus predict and the SageMaker tools.

Errors the user can fix print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from model_lib.errors import ConfigError, ModelLibError, TrainingInterrupted
from model_lib.redaction import install as install_redaction
from model_lib.redaction import redact

TRAIN_ON_ENV = "MODEL_LIB_TRAIN_ON"
TRAIN_PLACES = ("local", "sagemaker")
STAGES = ("ingest", "prepare", "train", "evaluate")
_STAGE_HELP = {
    "ingest": "read the review source (params: ingest) and write data/reviews.jsonl",
    "prepare": "split, fit the vocabulary, encode, build the GloVe matrix (params: prepare) into data/prepared/",
    "train": (
        "train (params: train), write models/model.keras and log the run to MLflow; stopped (Ctrl-C, SIGTERM) it "
        "saves its state in checkpoints/ and the next run resumes there, in the same MLflow run. With "
        "MODEL_LIB_TRAIN_ON=sagemaker the same outputs come from a SageMaker job (options: MODEL_LIB_LAUNCH_OPTIONS, "
        "the flags of `model-lib launch`; README: SageMaker)"
    ),
    "evaluate": "score models/model.keras on the test split (params: evaluate); write reports/ and add to the MLflow run",
}


def _add_params_options(parser: argparse.ArgumentParser, section: str | None) -> None:
    parser.add_argument("--params", default="params.yaml", metavar="PATH", help="params file (default: params.yaml)")
    example = f"{section}.epochs=2" if section == "train" else "train.epochs=2"
    parser.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a param for this run, e.g. -S {example} (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``model-lib``."""
    parser = argparse.ArgumentParser(
        prog="model-lib",
        description="IMDB sentiment with GloVe: the DVC pipeline stages, prediction and SageMaker script mode.",
        allow_abbrev=False,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for stage in STAGES:
        sub = commands.add_parser(stage, help=_STAGE_HELP[stage], description=_STAGE_HELP[stage], allow_abbrev=False)
        _add_params_options(sub, stage)
        if stage in ("train", "evaluate"):
            sub.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
        if stage == "train":
            sub.add_argument(
                "--register-model",
                metavar="NAME",
                default=None,
                help="register the logged model as a new version of NAME (default: $MODEL_LIB_REGISTER_MODEL; none)",
            )

    predict = commands.add_parser(
        "predict",
        help="print label and P(positive) for reviews",
        allow_abbrev=False,
        description="Print 'label<TAB>probability<TAB>text' for each review given as arguments or in --file.",
    )
    predict.add_argument("texts", nargs="*", metavar="TEXT", help="review texts")
    predict.add_argument("--file", type=Path, help="a UTF-8 file with one review per line ('-' reads stdin)")
    predict.add_argument(
        "--model", type=Path, default=Path("models/model.keras"), help="raw-string .keras model (default: models/model.keras)"
    )
    predict.add_argument(
        "--threshold", type=float, default=0.5, help="P(positive) at or above which the label is positive (default 0.5)"
    )

    _add_sagemaker_local_command(commands)
    sync = commands.add_parser(
        "mlflow-sync",
        allow_abbrev=False,
        help="send the MLflow records a training kept while the tracking server did not answer",
        description=(
            "Training never stops because MLflow does not answer: what could not be sent waits in "
            "<checkpoints>/mlflow-pending.json. This sends it, in order, to MLFLOW_TRACKING_URI."
        ),
    )
    sync.add_argument(
        "--checkpoints",
        type=Path,
        default=Path("checkpoints"),
        help="the training's checkpoint folder (default: checkpoints/; a SageMaker job's: <base dir>/checkpoints)",
    )
    sync.add_argument(
        "--wait", type=float, default=30.0, help="seconds to keep trying a server that does not answer (default 30)"
    )

    _add_launch_command(commands)
    _add_tune_command(commands)
    _add_deploy_command(commands)
    return parser


def _add_sagemaker_local_command(commands: Any) -> None:
    """Add the ``sagemaker-local`` subcommand to ``commands`` (the subparsers of ``model-lib``)."""
    local = commands.add_parser(
        "sagemaker-local",
        allow_abbrev=False,
        help="run the real sagemaker-training toolkit on this machine (no Docker) on the prepare outputs",
        description=(
            "Lay out a SAGEMAKER_BASE_DIR (input/config/*.json as the SDK writes them, one folder per channel, "
            "output/, model/, checkpoints/) and run the toolkit's `train` with entry_point/ as submitted code, as a "
            "SageMaker training container would. Hyperparameters are the train: section of params.yaml with -S overrides."
        ),
    )
    _add_params_options(local, "train")
    local.add_argument(
        "--base-dir",
        type=Path,
        default=Path("sagemaker-local"),
        help="the SAGEMAKER_BASE_DIR to create (default: sagemaker-local/)",
    )
    local.add_argument(
        "--source-dir", type=Path, default=None, help="code to submit (default: the entry_point/ folder of this repo)"
    )
    local.add_argument(
        "--prepared", type=Path, default=Path("data/prepared"), help="folder with the prepare outputs (default: data/prepared)"
    )
    local.add_argument("--keep", action="store_true", help="reuse an existing --base-dir instead of refusing to overwrite it")
    local.add_argument(
        "--instance-count",
        type=int,
        default=1,
        help="hosts (default 1); N > 1 runs N toolkits on 127.0.0.1..127.0.0.N, data parallel on the JAX backend, "
        "the others' folders under <base-dir>/hosts/",
    )
    local.add_argument(
        "--job",
        metavar="NAME",
        help="run the recorded training job NAME (DescribeTrainingJob) as SageMaker would: channels and code from S3, "
        "checkpoints restored from and synced to its checkpoint URI, model.tar.gz uploaded to its output path",
    )
    local.add_argument(
        "--interrupt-after",
        type=float,
        metavar="SECONDS",
        help="with --job: send SIGTERM after SECONDS, as a spot reclaim does (run again to resume)",
    )


def _add_launch_command(commands: Any) -> None:
    """Add the ``launch`` subcommand to ``commands`` (the subparsers of ``model-lib``)."""
    launch = commands.add_parser(
        "launch",
        allow_abbrev=False,
        help="start a SageMaker training job (SDK v2 Estimator) on the DVC-pushed data",
        description=(
            "Build the training job from params.yaml (train:), the Terraform outputs and the DVC S3 remote; check "
            "that every channel object and the image exist (every problem is listed at once, exit 2); start the job. "
            "Lineage (git commit, dirty flag, each channel's DVC md5) goes into the job's tags and its MLflow run."
        ),
    )
    _add_params_options(launch, "train")
    _add_launch_options(launch)
    launch.add_argument("--dry-run", action="store_true", help="print the CreateTrainingJob request as JSON; send nothing")
    launch.add_argument(
        "--wait",
        action="store_true",
        help="follow the job; at its end print the model's S3 URI, billable and training seconds, test accuracy, cost in USD",
    )


def _add_tune_command(commands: Any) -> None:
    """Add the ``tune`` subcommand to ``commands`` (the subparsers of ``model-lib``)."""
    tune = commands.add_parser(
        "tune",
        allow_abbrev=False,
        help="tune the train: hyperparameters (params: tune) with a SageMaker tuning job, or locally with --local",
        description=(
            "Build a SageMaker hyperparameter tuning job from params.yaml (tune: the ranges, objective, strategy and "
            "limits; train: the rest) around the training job `model-lib launch` would start, with the same checks, "
            "image, channels and options; --job-name names the tuning job (1-32 characters). Metric regexes are "
            "model_lib's own. With MLFLOW_TRACKING_URI set, the tuning job gets an MLflow parent run and each "
            "trial's run is its child. README: Tuning."
        ),
    )
    _add_params_options(tune, "train")
    _add_launch_options(tune)
    for action in tune._actions:  # the one launch flag that means another thing here
        if action.dest == "job_name":
            action.help = "tuning job name, 1-32 characters (default: model-lib-tune-<MMDDHHMMSS>); trials: <name>-NNN-<hex>"
    tune.add_argument(
        "--dry-run", action="store_true", help="print the CreateHyperParameterTuningJob request as JSON; send nothing"
    )
    tune.add_argument("--wait", action="store_true", help="follow the tuning job: each trial's status, the best so far")
    tune.add_argument(
        "--attach",
        metavar="NAME",
        help="follow the tuning job NAME started earlier instead of starting one (with --apply-best: use its best)",
    )
    tune.add_argument(
        "--apply-best",
        action="store_true",
        help="when the tuning ends, write the best trial's values into --params train: (implies --wait), for `dvc repro`",
    )
    tune.add_argument(
        "--local",
        action="store_true",
        help="run the search here, one `model-lib sagemaker-local` trial after another (Grid in order, every other "
        "strategy at random), same MLflow layout; trials' folders under --base-dir (the job flags above do not apply)",
    )
    tune.add_argument(
        "--base-dir",
        type=Path,
        default=Path("tuning-local"),
        help="with --local: where each trial's SAGEMAKER_BASE_DIR and results.json go (default: tuning-local/)",
    )


def _add_deploy_command(commands: Any) -> None:
    """Add the ``deploy`` subcommand to ``commands`` (the subparsers of ``model-lib``)."""
    from model_lib.sagemaker.deploy_options import DeployOptions

    deploy = commands.add_parser(
        "deploy",
        allow_abbrev=False,
        help="serve a trained model on SageMaker: a real-time or serverless endpoint, or a batch transform",
        description=(
            "Serve a Completed training job's model.tar.gz, named by a registered MLflow version (models:/NAME/N, whose "
            "run carries the job's name), its S3 URI, or --job NAME, on the job's own image (its `serve`): CreateModel, "
            "then CreateEndpointConfig and CreateEndpoint (or UpdateEndpoint with --update), or CreateTransformJob with "
            "--batch-input. Names are derived from the source, so a second run reuses what exists. README: Deploying."
        ),
    )
    deploy.add_argument("source", nargs="?", metavar="SOURCE", help="models:/NAME/N or s3://.../model.tar.gz (or --job)")
    deploy.add_argument("--job", metavar="NAME", help="the Completed training job whose model.tar.gz to serve")
    _add_dataclass_flags(deploy, DeployOptions)
    deploy.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a variable of the serving container (repeatable); no credentials (DescribeModel shows them)",
    )
    deploy.add_argument("--dry-run", action="store_true", help="print every request as JSON (a list, in order); send nothing")
    deploy.add_argument(
        "--wait", action="store_true", help="follow the endpoint to InService (or the transform job to its end); exit 1 if not"
    )


def _add_launch_options(parser: argparse.ArgumentParser) -> None:
    """The job options `model-lib launch` takes, and MODEL_LIB_LAUNCH_OPTIONS holds for a remote train
    stage: one flag per LaunchOptions field that has a help text, its default the field's."""
    from model_lib.sagemaker.options import LaunchOptions

    _add_dataclass_flags(parser, LaunchOptions)


def _add_dataclass_flags(parser: argparse.ArgumentParser, options: type) -> None:
    """Add one flag per field of the ``options`` dataclass that has a help text, its default the field's."""
    for field, kind in _flags_of(options).items():
        flag = "--" + field.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=field.metadata["help"])
        else:
            metavar = field.metadata.get("metavar")
            parser.add_argument(flag, type=kind, default=field.default, metavar=metavar, help=field.metadata["help"])


def _launch_flags() -> dict[Any, type]:
    """Return each LaunchOptions field that is a flag, with the type its value is parsed as."""
    from model_lib.sagemaker.options import LaunchOptions

    return _flags_of(LaunchOptions)


def _flags_of(options: type) -> dict[Any, type]:
    """Return each field of the ``options`` dataclass that is a flag, with the type its value is parsed as."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(options)
    flags = {}
    for field in dataclasses.fields(options):
        if "help" in field.metadata:
            kinds = [k for k in typing.get_args(hints[field.name]) if k is not type(None)] or [hints[field.name]]
            flags[field] = kinds[0]
    return flags


def _overrides_for(section: str, items: Sequence[str]) -> dict[str, str]:
    from model_lib.config import parse_overrides

    qualified = [item if "." in item.partition("=")[0] else f"{section}.{item}" for item in items]
    grouped = parse_overrides(qualified)
    others = sorted(set(grouped) - {section})
    if others:
        raise ModelLibError(f"-S: this command reads only the {section!r} section, not {others[0]!r}")
    return grouped.get(section, {})


def train_on(environ: Mapping[str, str] | None = None) -> str:
    """Return where the train stage runs: "local" (default) or "sagemaker" (``MODEL_LIB_TRAIN_ON``).

    Read here, not in model_lib.sagemaker: a local train stage imports none of the SageMaker adapter
    (dvc.yaml's train deps are the code that can change a locally trained model).

    Raises:
        ConfigError: for any other value of MODEL_LIB_TRAIN_ON.
    """
    value = (os.environ if environ is None else environ).get(TRAIN_ON_ENV, "").strip().lower() or "local"
    if value not in TRAIN_PLACES:
        raise ConfigError(f"{TRAIN_ON_ENV}={value!r}: expected one of {', '.join(TRAIN_PLACES)}")
    return value


def _run_stage(args: argparse.Namespace) -> int:
    from model_lib import pipeline
    from model_lib.config import load_section

    config = load_section(args.command, args.params, _overrides_for(args.command, args.overrides))
    if args.command in ("train", "evaluate") and not args.no_mlflow:
        from model_lib.tracking.lineage import user_tags

        user_tags()  # checked at the door: a bad value fails before any run is opened
    if args.command == "ingest":
        summary = pipeline.ingest(config)
        print(f"ingest: {summary['reviews']} reviews ({summary['positive']} positive) -> {pipeline.Paths().reviews}")
    elif args.command == "prepare":
        report = pipeline.prepare(config)
        print(
            f"prepare: {report['train_reviews']} train / {report['test_reviews']} test reviews, "
            f"{report['vocabulary_tokens']} tokens, GloVe coverage {report['glove_coverage']:.2%} -> {pipeline.Paths().prepared}/"
        )
    elif args.command == "train":
        # Keras' progress bar on a terminal; one line per epoch in logs (DVC, CI).
        if train_on() == "sagemaker":
            from model_lib.parent_watch import stopping_when_parent_goes

            # Left by a killed `dvc repro`, the follower stops following (the job goes on) as on SIGTERM.
            with stopping_when_parent_goes():
                summary = _train_on_sagemaker(config, args)
        else:
            from model_lib.tracking import REGISTER_MODEL_ENV  # the train stage imports tracking anyway

            summary = pipeline.train(
                config,
                track=not args.no_mlflow,
                verbose="auto" if sys.stdout.isatty() else 2,
                register_model=args.register_model or os.environ.get(REGISTER_MODEL_ENV) or None,
            )
        run = f", MLflow run {summary['run_id']}" if summary.get("run_id") else ""
        run += f", SageMaker job {summary['sagemaker_job']}" if "sagemaker_job" in summary else ""
        print(
            f"train: {summary['epochs_run']} epochs (best {summary['best_epoch']}) "
            f"in {summary['train_seconds']:.0f} s{run} -> {pipeline.Paths().model}"
        )
    else:
        metrics = pipeline.evaluate(config, track=not args.no_mlflow)
        auc = "undefined (one class)" if metrics["roc_auc"] is None else f"{metrics['roc_auc']:.4f}"
        scores = f"accuracy {metrics['accuracy']:.4f}, F1 {metrics['f1']:.4f}, ROC AUC {auc}"
        print(f"evaluate: {scores}, predicted in {metrics['predict_seconds']:.1f} s -> {pipeline.Paths().reports}/")
    return 0


def _decoded_lines(raw: bytes, where: str) -> list[str]:
    """Return the UTF-8 text ``raw`` split on "\\n" only (a review holding U+0085 stays one line).

    Raises:
        DataError: naming ``where``, the line and the first byte that is not UTF-8.
    """
    from model_lib.errors import DataError

    try:
        return raw.decode("utf-8").split("\n")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{where}: line {line}: expected UTF-8 text, got byte {raw[exc.start]:#04x}") from None


def _read_texts(args: argparse.Namespace) -> list[str]:
    from model_lib.errors import DataError

    texts = list(args.texts)
    for number, text in enumerate(texts, 1):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # a non-UTF-8 argument arrives with surrogate escapes
            byte = os.fsencode(text[exc.start : exc.end])[0]
            raise DataError(f"TEXT {number}: expected UTF-8 text, got byte {byte:#04x}") from None
    if args.file is not None:
        if str(args.file) == "-":
            stdin = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else None
            lines = _decoded_lines(stdin.read(), "stdin") if stdin is not None else sys.stdin.read().split("\n")
        else:
            if not args.file.is_file():
                raise ModelLibError(f"{args.file}: file not found")
            lines = _decoded_lines(args.file.read_bytes(), str(args.file))
        texts.extend(line for line in lines if line.strip())
    if not texts:
        raise ModelLibError("predict: give review texts as arguments or --file with one review per line")
    return texts


def _predict(args: argparse.Namespace) -> int:
    import math

    if not (math.isfinite(args.threshold) and 0 <= args.threshold <= 1):
        raise ConfigError(f"--threshold: expected a number from 0 to 1, got {args.threshold:g}")
    texts = _read_texts(args)
    from model_lib.inference import load_raw_string_model, predict

    probabilities = predict(load_raw_string_model(args.model), texts)
    for text, probability in zip(texts, probabilities):
        label = "positive" if probability >= args.threshold else "negative"
        shown = text if len(text) <= 60 else text[:57] + "..."
        print(f"{label}\t{probability:.4f}\t{shown}")
    return 0


def _sagemaker_local(args: argparse.Namespace) -> int:
    from model_lib.config import load_section
    from model_lib.sagemaker.local import run_local
    from model_lib.sagemaker.recorded import run_recorded_job

    if args.interrupt_after is not None and args.job is None:
        raise ModelLibError("--interrupt-after needs --job NAME")
    if args.job is not None and args.instance_count != 1:
        raise ModelLibError("--instance-count does not go with --job: the recorded job's InstanceCount is used")
    if args.interrupt_after is not None:
        from model_lib.environ import check_seconds

        check_seconds(args.interrupt_after, "--interrupt-after", positive=True)
    if args.job is not None:
        import boto3

        result = run_recorded_job(args.job, boto3.Session(), base_dir=args.base_dir, interrupt_after=args.interrupt_after)
    else:
        config = load_section("train", args.params, _overrides_for("train", args.overrides))
        result = run_local(
            config,
            prepared=args.prepared,
            base_dir=args.base_dir,
            source_dir=args.source_dir,
            reuse=args.keep,
            instance_count=args.instance_count,
        )
    print(f"sagemaker-local: exit code {result.exit_code}")
    print(f"  model:   {result.model_dir.resolve()}")
    print(f"  output:  {result.output_data_dir.resolve()}")
    if result.failure:
        print(f"  failure: {result.failure_file}\n    {result.failure.strip().splitlines()[0] if result.failure.strip() else ''}")
    return result.exit_code


def _mlflow_sync(args: argparse.Namespace) -> int:
    from model_lib._io import check_output_folder
    from model_lib.environ import check_seconds
    from model_lib.locking import hold_training
    from model_lib.tracking import PENDING_FILE

    check_seconds(args.wait, "--wait")
    if not (args.checkpoints / PENDING_FILE).is_file():
        return _send_pending(args)  # nothing to send; no lock file made for that
    # Sent records are taken out of the file: a folder it cannot be rewritten in is refused first.
    check_output_folder(args.checkpoints, "the pending tracking records")
    # A training of the folder sends (and rewrites) this pending file itself: not both at once.
    with hold_training(args.checkpoints, purpose="mlflow-sync"):
        return _send_pending(args)


def _send_pending(args: argparse.Namespace) -> int:
    from model_lib.tracking import PENDING_FILE, MlflowTracker, public_uri
    from model_lib.tracking.queue import check_pending

    pending = args.checkpoints / PENDING_FILE
    if not pending.is_file():
        print(f"mlflow-sync: nothing to send ({pending} does not exist)")
        return 0
    check_pending(pending)  # before the tracker reads it: a bad record would be skipped, and lost
    tracker = MlflowTracker(pending_file=pending, open_run=False)
    if tracker.flush(wait=args.wait):
        print(f"mlflow-sync: sent every record to run {tracker.run_id} at {public_uri(tracker.uri)}")
        return 0
    print(f"mlflow-sync: {public_uri(tracker.uri)} did not answer; {len(tracker.pending)} records still wait in {pending}")
    return 1


def _train_on_sagemaker(config: Any, args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    import boto3

    from model_lib import pipeline
    from model_lib.environ import seconds_from_env
    from model_lib.errors import ConfigError
    from model_lib.sagemaker import remote

    if args.no_mlflow:
        raise ConfigError(
            "--no-mlflow: a SageMaker job tracks to MLFLOW_TRACKING_URI when it is set; unset it to train untracked"
        )
    poll = seconds_from_env(remote.POLL_SECONDS_ENV, remote.DEFAULT_POLL_SECONDS, positive=True)
    options = _remote_launch_options()
    if args.register_model:
        options = dataclasses.replace(options, register_model=args.register_model)
    paths = pipeline.Paths()
    report = lambda line: print(line, flush=True)  # noqa: E731 - DVC shows our stdout as it comes
    return remote.train(
        config,
        options,
        boto3.Session(),
        model=paths.model,
        history=paths.history,
        run_reference=paths.run_reference,
        cost=paths.cost,
        poll_seconds=poll,
        report=report,
    )


def _launch_options(args: argparse.Namespace) -> Any:
    from model_lib.sagemaker.options import LaunchOptions

    return LaunchOptions(**{field.name: getattr(args, field.name) for field in _launch_flags()})


def _remote_launch_options() -> Any:
    """Return the LaunchOptions in MODEL_LIB_LAUNCH_OPTIONS (launch's flags, shell-quoted).

    Raises:
        ConfigError: for a flag `model-lib launch` does not take.
    """
    import shlex

    from model_lib.errors import ConfigError
    from model_lib.sagemaker.remote import OPTIONS_ENV

    parser = argparse.ArgumentParser(prog=OPTIONS_ENV, add_help=False, exit_on_error=False, allow_abbrev=False)
    _add_launch_options(parser)
    raw = os.environ.get(OPTIONS_ENV, "")
    try:
        args, unknown = parser.parse_known_args(shlex.split(raw))
    except (argparse.ArgumentError, ValueError) as exc:
        raise ConfigError(f"{OPTIONS_ENV}={raw!r}: {exc}") from None
    if unknown:
        raise ConfigError(f"{OPTIONS_ENV}={raw!r}: not a `model-lib launch` option: {' '.join(unknown)}")
    if args.job_name:
        raise ConfigError(f"{OPTIONS_ENV}: --job-name is chosen by the stage (one name per inputs and params)")
    if args.terraform_outputs is not None:
        args.terraform_outputs = _from_dvc_root(args.terraform_outputs, f"{OPTIONS_ENV}: --terraform-outputs")
    return _launch_options(args)


def _from_dvc_root(path: Path, what: str, environ: Mapping[str, str] | None = None) -> Path:
    """Return ``path``, a relative one found in the repo the stage was started from when it is not here.

    A queued experiment (``dvc queue start``, ``dvc exp run --run-all``) runs in a temporary copy of the
    repo under .dvc/tmp/exps that holds only what git tracks; DVC sets DVC_ROOT to the repo it came
    from, where a git-ignored file such as tf-outputs.json is.

    Raises:
        ConfigError: if the file is in neither place.
    """
    from model_lib.errors import ConfigError

    env = os.environ if environ is None else environ
    if path.is_absolute() or path.is_file():
        return path
    root = env.get("DVC_ROOT")
    if root and (Path(root) / path).is_file():
        return Path(root) / path
    where = f"{Path.cwd()}" + (f" or {root} (DVC_ROOT)" if root and Path(root) != Path.cwd() else "")
    raise ConfigError(
        f"{what} {path}: no such file in {where}; give an absolute path (a queued experiment runs in a "
        "temporary copy of the repo that holds only what git tracks)"
    )


def outcome_lines(job_name: str, outcome: Any) -> list[str]:
    """Return what `model-lib launch --wait` prints when the job ends: its status, failure reason,
    model URI, billable and training seconds, cost in USD (and spot's saving), test accuracy."""
    lines = [f"launch: {job_name} {outcome.status}"]
    if outcome.failure_reason:
        lines.append(f"  failure: {outcome.failure_reason}")
    if outcome.model_artifacts:
        lines.append(f"  model:   {outcome.model_artifacts}")
    if outcome.training_seconds is not None:
        billable = outcome.billable_seconds if outcome.billable_seconds is not None else outcome.training_seconds
        saved = 1 - billable / outcome.training_seconds if outcome.training_seconds else 0.0
        lines.append(f"  seconds: {billable} billable of {outcome.training_seconds} training ({saved:.0%} saved)")
    if outcome.cost is not None:
        lines.append(f"  cost:    {outcome.cost.describe()}")
    if outcome.test_accuracy is not None:
        lines.append(f"  test accuracy: {outcome.test_accuracy:.4f}")
    return lines


def _launch(args: argparse.Namespace) -> int:
    import boto3

    from model_lib.config import load_section
    from model_lib.sagemaker import launch
    from model_lib.tracking.lineage import user_tags

    config = load_section("train", args.params, _overrides_for("train", args.overrides))
    user_tags()  # the job's tags: checked before anything is asked of AWS
    options = _launch_options(args)
    session = boto3.Session()
    job = launch.plan(config, options, session)
    request = launch.start(job, session, dry_run=args.dry_run)
    if args.dry_run:
        print(json.dumps(request, indent=2, sort_keys=True, default=str))
        return 0
    spot = ", spot" if options.spot else ""
    print(f"launch: started training job {job.job_name} ({job.image_uri}, {options.instance_type}{spot})")
    if not args.wait:
        return 0
    outcome = launch.wait(job.job_name, session, job=job)
    print("\n".join(outcome_lines(outcome.job_name or job.job_name, outcome)))
    return 0 if outcome.status == "Completed" else 1


def _tune(args: argparse.Namespace) -> int:
    from model_lib.sagemaker import tune_command

    return tune_command.run(args, _launch_options(args), _overrides_for("train", args.overrides))


def _deploy(args: argparse.Namespace) -> int:
    from model_lib.sagemaker import deploy_command
    from model_lib.sagemaker.deploy import parse_environment
    from model_lib.sagemaker.deploy_options import DeployOptions

    values = {field.name: getattr(args, field.name) for field in _flags_of(DeployOptions)}
    return deploy_command.run(args, DeployOptions(**values, environment=parse_environment(args.env)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``model-lib`` with ``argv``; return the exit code (2 for errors the user can fix)."""
    import model_lib

    model_lib._no_layer_registration_on_keras_import()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    install_redaction()  # no credential in any line we or a library log, nor in a traceback
    if not args.verbose:  # their INFO lines (where credentials and endpoints were found) drown ours
        for noisy in ("botocore", "boto3", "sagemaker", "s3transfer", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")  # v2 is needed: v3 bypasses the toolkit (launch.py)
    handlers: dict[str, Any] = {
        "predict": _predict,
        "sagemaker-local": _sagemaker_local,
        "launch": _launch,
        "tune": _tune,
        "deploy": _deploy,
        "mlflow-sync": _mlflow_sync,
    }
    try:
        return int(handlers.get(args.command, _run_stage)(args))
    except ModelLibError as exc:
        print(f"model-lib {args.command}: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except TrainingInterrupted as exc:
        print(f"model-lib {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a write outside our atomic writer that the place refused (full, read-only)
        from model_lib._io import os_error_cause

        cause = os_error_cause(exc)
        if cause is None or exc.filename is None:  # not about a path the user chose: keep the traceback
            raise
        print(f"model-lib {args.command}: error: {exc.filename}: {cause}", file=sys.stderr)
        return 2
    except Exception as exc:
        from model_lib.sagemaker.remote import StillRunning

        unreachable = _aws_unreachable(exc)
        if unreachable is not None:
            print(f"model-lib {args.command}: error: {redact(unreachable)}", file=sys.stderr)
            return 2
        if not isinstance(exc, StillRunning):
            raise
        print(f"model-lib {args.command}: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code


_AWS_UNREACHABLE = ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "NoCredentialsError")


def _aws_unreachable(exc: BaseException) -> str | None:
    """Return one line for an AWS endpoint that does not answer or missing credentials, else None.

    botocore's own text names the endpoint; which variables point it elsewhere is what a user needs.
    """
    if type(exc).__module__ != "botocore.exceptions" or type(exc).__name__ not in _AWS_UNREACHABLE:
        return None
    return f"AWS: {exc} (expected AWS to answer with credentials: check AWS_ENDPOINT_URL, AWS_PROFILE, the network)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
