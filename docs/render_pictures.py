"""Render the README's pictures (docs/*.png) in headless Chromium, with no network.

- mlflow-run.png, mlflow-run-figures.png, mlflow-run-system-metrics.png: the default run's page
  (models/mlflow_run.json): its overview, its figures, its system metrics;
- mlflow-compare.png: the experiment's runs in chart view, the default run beside the short
  variants of docs/comparison_runs.py (trained into the local store if it lacks them);
- dvc-plots.png: the page `dvc plots show` writes (vendor/vega/dvc_plots.html: drawn offline).

Run it after `make run`: `make docs-picture`. A real `mlflow server` on the local store
(sqlite:///mlflow.db, artefacts in mlruns/) serves the MLflow pages and is stopped at the end. Exits
0 with a reason, rendering nothing, where no browser is installed.

    python -m docs.render_pictures [--repo .] [--output-dir docs] [--browser chromium]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from docs import browser, comparison_runs, mlflow_pages

REPO = Path(__file__).resolve().parents[1]
RUN_PAGE_SIZE = (1440, 1500)
FIGURE_SIZE = (1440, 760)
COMPARE_SIZE = (1440, 1100)
PLOTS_SIZE = (1200, 820)
# The run page's pictures: file name, tab (mlflow_pages.run_page) and window size.
RUN_PICTURES = {
    "mlflow-run.png": ("overview", RUN_PAGE_SIZE),
    "mlflow-run-figures.png": ("artifacts/figures/training_curves.png", FIGURE_SIZE),
    "mlflow-run-system-metrics.png": ("system-metrics", FIGURE_SIZE),
}


def default_run(repo: Path) -> str:
    """Return the run id in ``repo``/models/mlflow_run.json; raises SystemExit if there is none."""
    reference = repo / "models" / "mlflow_run.json"
    run_id = json.loads(reference.read_text(encoding="utf-8")).get("run_id") if reference.is_file() else None
    if not run_id:
        raise SystemExit(f"render_pictures: {reference} names no run; run `make run` first")
    return str(run_id)


def experiment_name(repo: Path, experiment_id: str) -> str:
    import mlflow

    return str(mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo}/mlflow.db").get_experiment(experiment_id).name)


def shoot(chromium: str, url: str, output: Path, size: tuple[int, int], port: int | None = None) -> None:
    """Screenshot ``url`` to ``output``: only the MLflow server's name resolves (none for a file)."""
    hosts = {mlflow_pages.UI_HOST: "127.0.0.1"} if port else {}
    browser.screenshot(chromium, url, output, size, hosts)
    print(f"render_pictures: {url} -> {output} ({output.stat().st_size} bytes)")


def render_mlflow_pictures(chromium: str, repo: Path, output_dir: Path) -> None:
    """Render the default run's pages and the experiment's chart view, from a server on ``repo``'s store."""
    run_id = default_run(repo)
    port = mlflow_pages.free_port()
    server = mlflow_pages.start_server(repo, port)
    try:
        experiment_id = mlflow_pages.experiment_of(port, run_id)
        comparison_runs.ensure_variants(repo, experiment_id, experiment_name(repo, experiment_id))
        for name, (tab, size) in RUN_PICTURES.items():
            shoot(chromium, mlflow_pages.run_page(port, experiment_id, run_id, tab), output_dir / name, size, port)
        shoot(chromium, mlflow_pages.runs_chart_page(port, experiment_id), output_dir / "mlflow-compare.png", COMPARE_SIZE, port)
    finally:
        mlflow_pages.stop(server)


def render_dvc_plots(chromium: str, repo: Path, output_dir: Path) -> None:
    """Render the page `dvc plots show` writes for ``repo`` (into a temporary folder) to dvc-plots.png."""
    dvc = str(Path(sys.executable).parent / "dvc")
    with tempfile.TemporaryDirectory(prefix="dvc-plots-") as folder:
        subprocess.run([dvc, "plots", "show", "-o", folder], cwd=repo, check=True, capture_output=True, timeout=300)
        shoot(chromium, (Path(folder) / "index.html").as_uri(), output_dir / "dvc-plots.png", PLOTS_SIZE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="repo whose store and outputs to show (default: this one)")
    parser.add_argument("--output-dir", type=Path, default=REPO / "docs", help="folder for the PNGs (default: docs/)")
    parser.add_argument("--browser", default=None, help=f"browser binary (default: the first of {', '.join(browser.BROWSERS)})")
    args = parser.parse_args(argv)
    chromium = browser.find_browser(args.browser)
    if chromium is None:
        print(f"render_pictures: skipped: no headless browser ({', '.join(browser.BROWSERS)}); apt-get install chromium")
        return 0
    repo = args.repo.resolve()
    render_dvc_plots(chromium, repo, args.output_dir)
    render_mlflow_pictures(chromium, repo, args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
