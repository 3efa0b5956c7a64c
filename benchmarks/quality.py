"""Model quality on the default split (bundled IMDB, 20,000 train / 5,000 test, seed 42), on full
reviews and on short texts: the default model on 3 seeds, its GloVe-vs-random-initialisation
ablation, seed_cnn, and the TF-IDF 1-2-gram + logistic regression anchor fitted in the same run.

Short texts are the test reviews cut to their first sentence and to their first 10, 20 and 40 words
(``<br />`` counts as a space): what users send to ``model-lib predict`` and the MLflow model is
often one line, not a 230-word review. Every model is scored on every cut.

    python benchmarks/quality.py                      # default, ablation, anchor (~20 min on 2 cores)
    python benchmarks/quality.py --runs seed_cnn --results quality_seed_cnn      # ~40 min
    python benchmarks/quality.py --runs ngram_glove --seeds 42 --set crop_share=0.3 --results try
Prints the tables and writes benchmarks/results/quality.json (or --results NAME).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_results

RUNS = {
    "ngram_glove": {"model": "ngram_glove"},
    "ngram_glove_random_init": {"model": "ngram_glove", "glove_init": False},
    "seed_cnn": {"model": "seed_cnn"},
}
ANCHOR = "tfidf_1-2gram_logreg"
# The bars of issue 13: full-review accuracy on every seed, and at least the anchor on every cut.
FULL_BAR = 0.915

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _words(text: str) -> list[str]:
    return _BREAK.sub(" ", text).split()


def first_sentence(text: str) -> str:
    """Return the text up to its first '.', '!' or '?' followed by a space (all of it if none)."""
    return _SENTENCE_END.split(" ".join(_words(text)), maxsplit=1)[0]


def first_words(count: int) -> Callable[[str], str]:
    """Return a function giving a text's first ``count`` whitespace-separated words."""
    return lambda text: " ".join(_words(text)[:count])


CUTS: dict[str, Callable[[str], str]] = {
    "full": lambda text: text,
    "sentence": first_sentence,
    "10_words": first_words(10),
    "20_words": first_words(20),
    "40_words": first_words(40),
}


def prepared_default_split():
    """Return (PreparedData, train texts and labels, test texts and labels) built exactly as the
    prepare stage's defaults."""
    from model_lib.config import PrepareConfig
    from model_lib.data import load_reviews, split_indices
    from model_lib.embeddings import embedding_matrix, load_glove
    from model_lib.prepared import PreparedData, Split
    from model_lib.text import Vocabulary

    config = PrepareConfig()
    reviews = load_reviews("bundled")
    train, test = split_indices(reviews, test_size=config.test_size, seed=config.seed)
    train_texts, test_texts = [reviews.texts[i] for i in train], [reviews.texts[i] for i in test]
    vocabulary = Vocabulary.fit(train_texts, max_size=config.vocab_size, min_count=config.min_count)
    matrix = embedding_matrix(load_glove("bundled"), vocabulary.tokens, seed=config.seed).matrix
    ids = vocabulary.encode(reviews.texts, config.max_length)
    split = Split.from_padded
    data = PreparedData(split(ids[train], reviews.labels[train]), split(ids[test], reviews.labels[test]), vocabulary, matrix)
    return data, (train_texts, reviews.labels[train]), (test_texts, reviews.labels[test])


def encoded_cuts(data, test_texts: list[str]) -> dict[str, object]:
    """Return the test split's ids for every cut (full reviews: the prepared ids themselves)."""
    cuts = {
        name: data.vocabulary.encode([cut(t) for t in test_texts], data.max_length)
        for name, cut in CUTS.items()
        if name != "full"
    }
    return {"full": data.x_test, **cuts}


def tfidf_anchor(train, test) -> dict[str, object]:
    """Return the anchor's figures: accuracy per cut, full-review ROC AUC, fit seconds."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score

    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_df=0.9, sublinear_tf=True)
    classifier = LogisticRegression(C=10.0, max_iter=2000).fit(vectorizer.fit_transform(train[0]), train[1])
    seconds = time.perf_counter() - started
    cuts = {}
    for name, cut in CUTS.items():
        p = classifier.predict_proba(vectorizer.transform([cut(t) for t in test[0]]))[:, 1]
        cuts[name] = float(accuracy_score(test[1], p >= 0.5))
        if name == "full":
            auc = float(roc_auc_score(test[1], p))
    return {"accuracy": cuts["full"], "roc_auc": auc, "cuts": cuts, "train_seconds": seconds}


def train_once(data, cut_ids: dict, overrides: dict, seed: int) -> dict[str, object]:
    """Train through the shipped path (``training.run``) and return its figures on every cut."""
    from model_lib.config import TrainConfig
    from model_lib.evaluation import evaluate
    from model_lib.training import run

    config = dataclasses.replace(TrainConfig(), seed=seed, **overrides)
    result = run(config, data, verbose=2)
    cuts, auc = {}, 0.0
    for name, ids in cut_ids.items():
        started = time.perf_counter()
        p = result.model.predict(ids, batch_size=512, verbose=0).reshape(-1)
        metrics = evaluate(data.y_test, p)
        cuts[name] = metrics["accuracy"]
        if name == "full":
            auc, predict_seconds = metrics["roc_auc"], time.perf_counter() - started
    return {
        "accuracy": cuts["full"],
        "roc_auc": auc,
        "cuts": cuts,
        "train_seconds": result.train_seconds,
        "predict_5000_seconds": predict_seconds,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
    }


def parsed_settings(pairs: list[str]) -> dict[str, object]:
    """Return ``key=value`` pairs as TrainConfig overrides, parsed as params.yaml values are."""
    from model_lib.config import TrainConfig, from_mapping

    raw = dict(pair.split("=", 1) for pair in pairs)
    config = from_mapping(TrainConfig, raw, where="--set")
    return {key: getattr(config, key) for key in raw}


def summary_rows(rows: list[dict]) -> list[dict[str, str]]:
    """Return one row per run: mean and minimum accuracy on each cut over its seeds."""
    out = []
    for name in dict.fromkeys(row["run"] for row in rows):
        runs = [row for row in rows if row["run"] == name]
        line = {"run": name, "seeds": str(len(runs)) if name != ANCHOR else "-"}
        for cut in CUTS:
            values = [row["cuts"][cut] for row in runs]
            line[cut] = f"{statistics.mean(values):.4f}" + (f" (min {min(values):.4f})" if len(values) > 1 else "")
        out.append(line)
    return out


def bars(rows: list[dict]) -> list[str]:
    """Return the issue-13 bars the default model misses (empty when it meets them all)."""
    anchor = next(row for row in rows if row["run"] == ANCHOR)["cuts"]
    missed = []
    for row in (row for row in rows if row["run"] == "ngram_glove"):
        if row["accuracy"] < FULL_BAR:
            missed.append(f"seed {row['seed']}: full-review accuracy {row['accuracy']:.4f} < {FULL_BAR}")
        for cut, value in row["cuts"].items():
            if value < anchor[cut]:
                missed.append(f"seed {row['seed']}: {cut} {value:.4f} < anchor {anchor[cut]:.4f}")
    return missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument(
        "--runs", nargs="+", default=["ngram_glove", "ngram_glove_random_init"], choices=list(RUNS), help="models to train"
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="train parameters for every run")
    parser.add_argument("--results", default="quality", help="results file name under benchmarks/results (default: quality)")
    args = parser.parse_args()
    overrides = parsed_settings(args.set)

    data, train, test = prepared_default_split()
    cut_ids = encoded_cuts(data, test[0])
    rows = [{"run": ANCHOR, "seed": "-", **tfidf_anchor(train, test)}]
    print(f"{ANCHOR}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[0]["cuts"].items()), flush=True)
    for name in args.runs:
        for seed in args.seeds:
            row = {"run": name, "seed": seed, **train_once(data, cut_ids, {**RUNS[name], **overrides}, seed)}
            rows.append(row)
            print(f"{name} seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in row["cuts"].items()), flush=True)

    shown = [{k: f"{v:.4f}" if isinstance(v, float) else v for k, v in row.items() if k != "cuts"} for row in rows]
    print(table(shown, ["run", "seed", "accuracy", "roc_auc", "train_seconds", "predict_5000_seconds", "epochs", "best_epoch"]))
    print("\nAccuracy by input length (mean over seeds, min in brackets):")
    print(table(summary_rows(rows), ["run", "seeds", *CUTS]))
    missed = bars(rows)
    figures = {"runs": rows, "seeds": args.seeds, "settings": overrides, "cuts": list(CUTS), "missed_bars": missed}
    print(f"wrote {write_results(args.results, figures)}")
    for line in missed:
        print(f"MISSED: {line}", file=sys.stderr)


if __name__ == "__main__":
    main()
