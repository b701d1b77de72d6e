"""Debian's headless chromium through selenium and chromedriver: the report test opens pages with
it, and `python -m tests.browser PAGE.html SHOT.png` takes the README's screenshot the same way."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
MISSING = ("Debian's chromium and chromium-driver are not installed (.ci/run installs them: "
           "apt-get install chromium chromium-driver)")  # fmt: skip


@contextlib.contextmanager
def browser(width: int = 1280, height: int = 1600) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", f"--window-size={width},{height}"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def image_widths(driver) -> list[int]:
    """naturalWidth of every image on the page: 0 for one that did not decode."""
    return driver.execute_script(
        "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")


def problems(driver) -> list[dict]:
    """Console messages at warning level or worse."""
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def screenshot(page: Path, out: Path, max_height: int = 2400) -> None:
    """The top of the page, at most max_height pixels (the whole of a long report is unreadable
    once a README scales it down)."""
    with browser() as driver:
        driver.get(Path(page).resolve().as_uri())
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, min(height + 40, max_height))
        driver.save_screenshot(str(out))


if __name__ == "__main__":
    screenshot(Path(sys.argv[1]), Path(sys.argv[2]))
