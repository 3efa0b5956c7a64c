"""Rebuild vendor/vega/dvc_plots.html (the page `dvc plots show` fills in) from pinned npm packages.

The page inlines vega, vega-lite and vega-embed, so the HTML DVC writes draws its plots with no
network (DVC's own page loads them from a CDN). Each package tarball is fetched from the npm
registry, checked against its pinned sha256, and its built file is checked against a second sha256
before it is inlined; the packages' licences are copied beside the page.

    python vendor/vega/update.py [--registry https://registry.npmjs.org]

To move to other versions: change VERSION and both sha256s below (`npm pack vega@X` prints the
tarball; `sha256sum` it and its build file), run this, then `pytest tests/integration/test_plots_offline.py
--run-integration`.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGE = HERE / "dvc_plots.html"


@dataclass(frozen=True)
class Library:
    name: str
    version: str
    tarball_sha256: str
    build: str  # the file the package's `jsdelivr` field names: what DVC's CDN tag loads
    build_sha256: str


# DVC 3.67's page (dvc_render.vega.VegaRenderer.SCRIPTS) loads vega 5.20.2, vega-lite 5.2.0 and
# vega-embed 6.18.2. vega-lite 5.2.0 declares the peer dependency vega ^5.21.0, so vega is 5.21.0:
# the nearest release inside every declared range (vega-embed 6.18.2: vega ^5.13.0, vega-lite *).
LIBRARIES = (
    Library(
        "vega", "5.21.0", "20bed573a2aac78d31beacdc33f1e46eb39824951c712b3fac8130455f792160",
        "build/vega.min.js", "3b12459f256a971ac4ec45064c5152ff799e393456a96eb7c3270fc4554c1688",
    ),
    Library(
        "vega-lite", "5.2.0", "f64ca4745f043447ac86b67dc9e9592ec2b85ac8b8dafc35faf970f142463e4b",
        "build/vega-lite.min.js", "d73157451b3978015ab31dacd55ff90d986ab8663fc0abed50f97b3cd90002cb",
    ),
    Library(
        "vega-embed", "6.18.2", "93aeee312e92077b0252ef026c0fe0ec8fa430c19825aeada6cd3a6804e68e1b",
        "build/vega-embed.min.js", "1ba9826431ddc9805e815ad92acc811c819f2bfd32bda2a128b8c4b5070fab5e",
    ),
)  # fmt: skip

# dvc_render.html.HTML fills {refresh_tag} and {plot_divs}. There is no {scripts}: that is where DVC
# would put its CDN <script> tags, so leaving it out is what keeps them off the page.
TEMPLATE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Rebuilt by vendor/vega/update.py; licences in vendor/vega/LICENSE-*. -->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(library: Library, registry: str) -> bytes:
    """Return the package tarball from the registry; raises ValueError if its sha256 is not the pinned one."""
    url = f"{registry.rstrip('/')}/{library.name}/-/{library.name}-{library.version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as response:
        tarball = response.read()
    if sha256(tarball) != library.tarball_sha256:
        raise ValueError(f"{url}: sha256 {sha256(tarball)}, expected the pinned {library.tarball_sha256}")
    return tarball


def member(tarball: bytes, path: str) -> bytes:
    """Return the file ``package/<path>`` of an npm tarball."""
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        extracted = archive.extractfile(f"package/{path}")
        if extracted is None:
            raise ValueError(f"package/{path}: not a file in the tarball")
        return extracted.read()


def built_file(library: Library, tarball: bytes) -> str:
    """Return the library's built script; raises ValueError if its sha256 is not the pinned one."""
    script = member(tarball, library.build)
    if sha256(script) != library.build_sha256:
        raise ValueError(f"{library.name}: {library.build}: sha256 {sha256(script)}, expected {library.build_sha256}")
    return script.decode("utf-8")


def script_tag(library: Library, script: str) -> str:
    """Return ``script`` as an inline <script> tag, byte for byte (so its sha256 can be checked in the page).

    Raises ValueError if the script holds '</script', which would end the tag early.
    """
    if "</script" in script.lower():
        raise ValueError(f"{library.name}: its script contains '</script', which would end the inline tag")
    # Its last line, `//# sourceMappingURL=<name>.map`, stays: a browser reads it only with its developer
    # tools open (and finds no such file beside the page), never to draw.
    return f'<script data-library="{library.name}@{library.version}">{script}</script>'


def page(tags: list[str]) -> str:
    """Return the HTML template with the inline script tags in its head."""
    return TEMPLATE.format(scripts="\n".join(tags))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default="https://registry.npmjs.org", help="npm registry to fetch from")
    args = parser.parse_args(argv)
    tags = []
    for library in LIBRARIES:
        tarball = download(library, args.registry)
        tags.append(script_tag(library, built_file(library, tarball)))
        (HERE / f"LICENSE-{library.name}").write_bytes(member(tarball, "LICENSE"))
    PAGE.write_text(page(tags), encoding="utf-8")
    print(f"update: wrote {PAGE} ({PAGE.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
