"""gptcli report: one self-contained page of a small real study, opened in headless Chromium
(Debian's package; .ci/run installs it) where every picture must decode and the console stay
clean."""

import base64
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from gptcli.cli import app
from gptcli.data.prepare import prepare
from gptcli.evaluate import evaluate_checkpoint
from gptcli.study.grid import Grid
from gptcli.study.sweep import Sweep

from .. import browser
from ..conftest import make_text
from ..helpers import base_config

PNG = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """learned and alibi x 2 seeds through a real sweep; alibi also scored past its context."""
    root = tmp_path_factory.mktemp("study")
    (root / "c.txt").write_text(make_text(500), encoding="utf-8")
    data = prepare(input_path=root / "c.txt", tokenizer="char", out_dir=root / "data").out_dir
    base = base_config(root, data)
    out = root / "sweep"
    grid = Grid(base, out, [], {"model.position": ["learned", "alibi"]}, [1, 2])
    assert Sweep(grid, jobs=2).run() == 0
    for seed in (1, 2):
        evaluate_checkpoint(out / f"position=alibi,seed={seed}", which="latest",
                            contexts=[16, 32], device="cpu")  # fmt: skip
    return out


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tags, self.headings, self._in_h = [], [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self._in_h = tag in ("h1", "h2", "h3")

    def handle_data(self, data):
        if self._in_h:
            self.headings.append(data)
            self._in_h = False


def make_report(study, tmp_path, *extra):
    out = tmp_path / "study.html"
    done = runner.invoke(app, ["report", str(study), "--out", str(out),
                               "--baseline", "position=learned", *extra])  # fmt: skip
    assert done.exit_code == 0, done.output
    return out


@pytest.mark.slow
def test_the_page_holds_the_study_and_needs_nothing_else(study, tmp_path):
    out = make_report(study, tmp_path)
    text = out.read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    for section in ("What was compared", "Comparison", "Loss curves", "Every context evaluated",
                    "Parameters per variant", "Inside one seed of each variant"):  # fmt: skip
        assert section in page.headings
    # Self-contained: no script, no stylesheet or frame fetched, every picture inline.
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object")]
    assert "http://" not in text and "https://" not in text
    # curves + (attention + positions) for each of the 2 variants
    assert len(page.images) == 5
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG
    # The comparison carries intervals and verdicts; the context table every context scored.
    assert "95% CI of Δ" in text and "baseline" in text
    assert any(v in text for v in ("better", "worse", "within noise"))
    assert "16 (trained)" in text and ">32<" in text
    assert f"torch {torch.__version__}" in text  # where the runs were trained
    assert '<td class="text">seeds</td><td class="text">1, 2</td>' in text
    assert "model.position" in text  # the grid


@pytest.mark.slow
@pytest.mark.skipif(not (browser.CHROMIUM and browser.DRIVER), reason=browser.MISSING)
def test_chromium_opens_the_page_decodes_every_picture_and_logs_no_error(study, tmp_path):
    pytest.importorskip("selenium", reason="selenium (a dev extra) is not installed")
    out = make_report(study, tmp_path)
    with browser.browser() as driver:
        driver.get(out.resolve().as_uri())
        widths = browser.image_widths(driver)
        assert len(widths) == 5 and all(w > 0 for w in widths), widths
        assert driver.title.startswith("gptcli study")
        assert browser.problems(driver) == []
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == PNG and shot.stat().st_size > 20_000


def refused_in_one_line(args):
    done = runner.invoke(app, args)
    assert done.exit_code == 2, done.output
    assert len(done.output.strip().splitlines()) == 1 and done.output.startswith("error:")


def test_a_directory_without_runs_is_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    refused_in_one_line(["report", str(empty)])
    assert not (empty / "report.html").exists()


@pytest.mark.slow  # the study's sweep takes 4 s, too long for make check for this test alone
def test_bad_input_is_one_line(study, tmp_path):
    (tmp_path / "dir.html").mkdir()
    for args in (["report", str(study), "--out", str(tmp_path / "x.txt")],
                 ["report", str(study), "--out", str(tmp_path / "dir.html")],
                 ["report", str(study), "--baseline", "position=rope"]):  # fmt: skip
        refused_in_one_line(args)


@pytest.mark.slow
def test_runs_of_two_datasets_need_bits_per_byte(study, tmp_path):
    (tmp_path / "o.txt").write_text(make_text(500, seed=3), encoding="utf-8")
    other = prepare(input_path=tmp_path / "o.txt", tokenizer="char", out_dir=tmp_path / "od")
    config = yaml.safe_load(Path(study.parent / "base.yaml").read_text())
    config["data"]["dir"] = str(other.out_dir)
    (tmp_path / "o.yaml").write_text(yaml.safe_dump(config))
    done = runner.invoke(app, ["train", "--config", str(tmp_path / "o.yaml"), "--out",
                               str(tmp_path / "orun")])  # fmt: skip
    assert done.exit_code == 0, done.output
    refused = runner.invoke(app, ["report", str(study), str(tmp_path / "orun"),
                                  "--out", str(tmp_path / "r.html")])  # fmt: skip
    assert refused.exit_code == 2 and "use --metric bpb" in refused.output
    assert not (tmp_path / "r.html").exists()
    made = runner.invoke(app, ["report", str(study), str(tmp_path / "orun"), "--metric", "bpb",
                               "--out", str(tmp_path / "r.html")])  # fmt: skip
    assert made.exit_code == 0, made.output
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "bpb: bits per byte" in text  # the metric asked for, named
    assert "od (char tokenizer" in text and "data (char tokenizer" in text  # both datasets
    assert text.count("data:image/png;base64,") == 7  # curves + 3 variants x 2 pictures


def test_names_are_escaped_and_a_run_without_its_data_still_reports(tmp_path):
    from gptcli.study.report import build_report
    from gptcli.training.loop import train

    from ..conftest import tiny_config

    (tmp_path / "c.txt").write_text(make_text(300), encoding="utf-8")
    data = prepare(input_path=tmp_path / "c.txt", tokenizer="char", out_dir=tmp_path / "d")
    run = tmp_path / 'a<b>&"x'
    train(tiny_config(data.out_dir, run, train={"max_iters": 4}))
    (tmp_path / "d" / "meta.json").unlink()  # the dataset is gone: no default prompt from it
    done = build_report([run], tmp_path / "r.html")
    text = done.path.read_text(encoding="utf-8")
    assert "a&lt;b&gt;&amp;&quot;x" in text and 'a<b>' not in text
    assert done.pictures == 3 and text.count("data:image/png;base64,") == 3
