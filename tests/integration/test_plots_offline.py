"""`dvc plots show` in a copy of the repo writes a page that draws its plots with no network."""

import hashlib
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from tests.conftest import git_copy_of_repo
from vendor.vega.update import LIBRARIES

pytestmark = pytest.mark.integration

BROWSER = shutil.which("chromium")


class Page(HTMLParser):
    """The addresses a page's tags load (src, href) and the text of its <script data-library> tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.addresses: list[str] = []
        self.libraries: dict[str, str] = {}
        self._library: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.addresses += [value for name, value in attrs if name in ("src", "href") and value is not None]
        self._library = values.get("data-library") if tag == "script" else None
        if self._library:
            self.libraries[self._library] = ""

    def handle_data(self, data: str) -> None:
        if self._library:
            self.libraries[self._library] += data

    def handle_endtag(self, tag: str) -> None:
        self._library = None


@pytest.fixture(scope="module")
def plots_page(tmp_path_factory) -> Path:
    """The page plain `dvc plots show` writes in a git copy of the repo (the committed reports/*.csv)."""
    copy = tmp_path_factory.mktemp("repo")
    env = git_copy_of_repo(copy)
    shown = subprocess.run(["dvc", "plots", "show"], cwd=copy, env=env, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-3000:]
    return copy / "dvc_plots" / "index.html"


def parsed(page: Path) -> Page:
    parser = Page()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_dvc_plots_page_loads_only_files_beside_it(plots_page):
    addresses = parsed(plots_page).addresses
    assert addresses, "no <img src> at all: the PNG plots are missing from the page"
    for address in addresses:
        assert ":" not in address and not address.startswith("//"), f"the page loads {address}"
        assert (plots_page.parent / address).is_file(), f"the page loads {address}, which is not beside it"
    assert "cdn.jsdelivr.net" not in plots_page.read_text(encoding="utf-8")


def test_dvc_plots_page_inlines_the_pinned_vega_libraries(plots_page):
    libraries = parsed(plots_page).libraries
    assert set(libraries) == {f"{library.name}@{library.version}" for library in LIBRARIES}
    for library in LIBRARIES:
        script = libraries[f"{library.name}@{library.version}"].encode("utf-8")
        assert hashlib.sha256(script).hexdigest() == library.build_sha256, f"{library.name}: not the pinned build"


def rendered_dom(page: Path) -> str:
    """Return the DOM headless Chromium has once the page's scripts ran, every host unresolvable."""
    with tempfile.TemporaryDirectory() as profile:
        command = [
            str(BROWSER), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", f"--user-data-dir={profile}",
            # No network: a dead proxy for every request and no host that resolves.
            "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
            "--virtual-time-budget=10000", "--dump-dom", page.as_uri(),
        ]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.mark.skipif(BROWSER is None, reason="needs headless Chromium: no `chromium` on PATH (apt-get install chromium)")
def test_headless_chromium_draws_every_vega_plot_offline(plots_page):
    dom = rendered_dom(plots_page)
    declared = yaml.safe_load((plots_page.parents[1] / "dvc.yaml").read_text())["plots"]
    # vega-embed draws each plot into a <canvas class="marks"> inside its <div class="vega-embed">.
    assert dom.count('class="vega-embed') == len(declared), dom[-2000:]
    assert dom.count('class="marks"') == len(declared)
