"""The documentation site: `mkdocs build --strict` builds it (every nav entry, link and anchor
resolving), its reference holds every command, option and config key the code has, it asks for
nothing outside itself (so it opens offline), and its pages render in headless Chromium with no
console errors."""

from __future__ import annotations

import functools
import html
import http.server
import importlib.util
import os
import re
import subprocess
import sys
import threading

import pytest
import typer.main

from gptcli.cli import app
from gptcli.config import reference
from gptcli.model import choices

from . import browser
from .conftest import REPO

pytestmark = pytest.mark.slow  # a site build (about 5 s) and a browser: make test, not check


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    # Not a skip: make install puts the docs extra in .venv, and a site that is not built is
    # a site that is not tested.
    assert importlib.util.find_spec("mkdocs"), "the docs extra is missing: pip install -e '.[docs]'"
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def text_of(page) -> str:
    """A built page's text, tags dropped and entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")))


def test_every_command_and_option_is_in_the_command_reference(site):
    page = text_of(site / "reference" / "cli.html")
    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="gptcli")
    names = group.list_commands(ctx)
    assert len(names) == 10
    for name in names:
        command = group.get_command(ctx, name)
        assert f"gptcli {name} [OPTIONS]" in page, name
        for param in command.params:
            for opt in (o for o in param.opts if o.startswith("--")):
                assert opt in page, f"gptcli {name} {opt}"
        first = (command.help or "").split(".")[0]
        assert " ".join(first.split()) in " ".join(page.split()), name  # --help's own prose


def test_every_config_key_is_in_the_config_reference(site):
    page = text_of(site / "reference" / "config.html")
    for key, kind, _, _ in reference(choices()):
        assert re.search(rf"\b{re.escape(key)}\s+{re.escape(kind)}\b", page), key


def test_the_api_reference_comes_from_the_docstrings(site):
    import gptcli
    from gptcli.generate import LoadedModel

    def bare(text: str) -> str:  # the rendering spaces out code: compare without spaces
        return re.sub(r"[\s`]", "", text)

    page = bare(text_of(site / "reference" / "api.html"))
    for doc in (gptcli.load.__doc__, LoadedModel.score.__doc__, LoadedModel.generate.__doc__):
        assert bare(doc.split("\n\n")[0]) in page


# Attributes whose URL the browser fetches while showing a page (an <a href> is only followed).
FETCHED = re.compile(r"<(?:script|img|iframe|source|link)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"")


def test_the_site_asks_for_nothing_outside_itself(site):
    fetched = set()
    for page in site.rglob("*.html"):
        fetched |= set(FETCHED.findall(page.read_text(encoding="utf-8")))
    for sheet in site.rglob("*.css"):
        fetched |= set(re.findall(r"url\(\s*['\"]?([^'\")]+)", sheet.read_text(encoding="utf-8")))
    assert len(fetched) > 20  # the scan really sees the pages' scripts, styles and images
    outside = sorted(u for u in fetched if re.match(r"^(?:[a-z]+:)?//", u))
    assert not outside, f"the site fetches from outside itself: {outside}"


@pytest.fixture
def served(site):
    """The built site over HTTP on the loopback address, as `mkdocs serve` would show it."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.skipif(not (browser.CHROMIUM and browser.DRIVER), reason=browser.MISSING)
@pytest.mark.parametrize("path", ["index.html", "studies/positions.html"])
def test_a_page_renders_in_chromium(served, path):
    pytest.importorskip("selenium", reason="selenium (a dev extra) is not installed")
    with browser.browser() as driver:
        driver.get(f"{served}/{path}")
        assert driver.execute_script("return document.readyState") == "complete"
        heading = driver.execute_script("return document.querySelector('article h1').innerText")
        assert heading.rstrip("¶ \n") in ("gptcli", "Positions: six ways to say where a token is")
        widths = browser.image_widths(driver)
        assert widths and all(w > 0 for w in widths), widths  # every picture decoded
        loaded = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert loaded and all(u.startswith(served) for u in loaded), loaded
        assert browser.problems(driver) == []
