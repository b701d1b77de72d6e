"""prepare --force replaces only a dataset prepare wrote: a trained run, a folder of the user's
files or a plain file at --out is refused with one line (exit 2) and left byte for byte."""

import json

import pytest

from gptcli.data.prepare import prepare
from gptcli.errors import GptcliError
from gptcli.training.loop import train

from ..cli_checks import invoke, one_error_line, snapshot
from ..conftest import make_text, tiny_config


def prepare_args(corpus, out, *more):
    return ("prepare", "--input", corpus, "--tokenizer", "char", "--out", out, *more)


@pytest.fixture
def trained_run(tmp_path, char_data):
    run = tmp_path / "run"
    train(tiny_config(char_data, run, train={"max_iters": 4, "eval_interval": 2}))
    assert (run / "metrics.jsonl").is_file() and (run / "checkpoints.json").is_file()
    return run


def user_folder(tmp_path):
    folder = tmp_path / "precious"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "sub" / "photo.jpg").write_bytes(bytes(range(256)))
    return folder


def plain_file(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.4 not a dataset\n")
    return path


def a_meta_json_of_another_tool(tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"title": "my site"}))
    (folder / "index.html").write_text("<p>hi</p>")
    return folder


@pytest.mark.parametrize("force", [False, True])
def test_a_trained_run_is_refused_and_left_whole(tmp_path, corpus, trained_run, force):
    before = snapshot(trained_run)
    result = invoke(*prepare_args(corpus, trained_run, *["--force"] * force))
    one_error_line(result, f"--out {trained_run} holds", "checkpoints.json", "metrics.jsonl",
                   "no meta.json", "--force replaces only a dataset prepare wrote")  # fmt: skip
    assert snapshot(trained_run) == before


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize(
    "make, needles",
    [
        (user_folder, ("holds notes.txt, sub,", "no meta.json")),
        (plain_file, ("is a file, not a directory",)),
        (a_meta_json_of_another_tool, ("its meta.json is not one prepare writes",)),
    ],
)
def test_anything_but_a_dataset_is_refused_and_left_whole(tmp_path, corpus, make, needles, force):
    target = make(tmp_path)
    before = snapshot(target)
    siblings = sorted(p.name for p in tmp_path.iterdir())
    result = invoke(*prepare_args(corpus, target, *["--force"] * force))
    one_error_line(result, f"--out {target} ", *needles, "--force replaces only a dataset")
    assert "pass --force" not in result.output  # --force would not help
    assert snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == siblings  # no temporary left beside


def test_the_library_refuses_as_the_cli_does(tmp_path, corpus):
    target = user_folder(tmp_path)
    with pytest.raises(GptcliError, match="no meta.json"):
        prepare(input_path=corpus, tokenizer="char", out_dir=target, force=True)
    assert (target / "notes.txt").read_text() == "my notes\n"


def test_force_replaces_an_earlier_dataset(tmp_path, corpus):
    out = tmp_path / "d"
    assert invoke(*prepare_args(corpus, out)).exit_code == 0
    before = snapshot(out)
    one_error_line(invoke(*prepare_args(corpus, out)), "holds a dataset prepare wrote",
                   "pass --force to replace it")  # fmt: skip
    assert snapshot(out) == before
    other = tmp_path / "other.txt"
    other.write_text(make_text(seed=1))
    result = invoke(*prepare_args(other, out, "--force"))
    assert result.exit_code == 0, result.output
    assert snapshot(out) != before and (out / "meta.json").is_file()


def test_an_empty_directory_needs_force_as_before(tmp_path, corpus):
    out = tmp_path / "empty"
    out.mkdir()
    one_error_line(invoke(*prepare_args(corpus, out)), "already exists", "pass --force")
    assert invoke(*prepare_args(corpus, out, "--force")).exit_code == 0
    assert (out / "meta.json").is_file()
