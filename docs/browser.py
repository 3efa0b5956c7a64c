"""Headless Chromium for the README's pictures: find a browser, screenshot a page with no network."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser(name: str | None = None) -> str | None:
    """Return the path of ``name`` (default: the first of BROWSERS on PATH), or None where there is none."""
    for candidate in (name,) if name else BROWSERS:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def host_rules(hosts: dict[str, str]) -> str:
    """Return Chromium's --host-resolver-rules: each of ``hosts`` resolves to its address, no other name resolves.

    With no name resolving, the page cannot reach the internet: what it shows comes from the pages' own server.
    """
    return ", ".join([*(f"MAP {name} {address}" for name, address in hosts.items()), "MAP * ~NOTFOUND"])


def screenshot(browser: str, url: str, output: Path, size: tuple[int, int], hosts: dict[str, str] | None = None) -> None:
    """Write a PNG of ``url`` at ``size`` (width, height) to ``output``, once the page's scripts have run.

    Raises subprocess.CalledProcessError if the browser fails.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        command = [
            # No background networking: a closed network refuses those connections, many at a time.
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--disable-quic", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--host-resolver-rules={host_rules(hosts or {})}", f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=30000", f"--screenshot={output}", url,
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=180)
