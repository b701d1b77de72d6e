"""convert --force replaces only a checkpoint convert wrote: a trained run, a prepared dataset, a
folder of the user's files or a plain file at OUT_DIR is refused with one line (exit 2) and left
byte for byte. The source is a gptcli export, which convert reads without transformers."""

import json

import pytest

from gptcli import checkpoint
from gptcli.errors import GptcliError
from gptcli.interop.export import export
from gptcli.interop.hf import convert
from gptcli.training.loop import train

from ..cli_checks import invoke, one_error_line, snapshot
from ..conftest import tiny_config
from ..helpers import save_checkpoint, tokenizer_spec

CONVERTED_FILE = "converted.json"  # convert's mark (gptcli.interop.hf.CONVERTED_FILE)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A gptcli export to convert (any directory convert reads would do)."""
    root = tmp_path_factory.mktemp("convert_source")
    save_checkpoint(root / "run", tokenizer_spec("char"))
    export(root / "run", root / "export", fmt="safetensors")
    return root / "export"


def trained_run(tmp_path, char_data):
    run = tmp_path / "run"
    train(tiny_config(char_data, run, train={"max_iters": 4, "eval_interval": 2}))
    return run


def user_folder(tmp_path, char_data):
    folder = tmp_path / "precious"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "sub" / "photo.jpg").write_bytes(bytes(range(256)))
    return folder


def plain_file(tmp_path, char_data):
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.4 not a checkpoint\n")
    return path


def converted_then_trained(tmp_path, char_data, source):
    """A directory convert wrote that a training run then started over in (train --force)."""
    run = tmp_path / "run"
    convert(source, run)
    train(tiny_config(char_data, run, train={"max_iters": 4, "eval_interval": 2}), force=True)
    return run


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize(
    "make, needles",
    [
        (trained_run, ("checkpoints.json", "metrics.jsonl", f"no {CONVERTED_FILE}")),
        (lambda tmp_path, char_data: char_data, ("meta.json", "train.bin", f"no {CONVERTED_FILE}")),
        (user_folder, ("holds notes.txt, sub,", f"no {CONVERTED_FILE}")),
        (plain_file, ("is a file, not a directory",)),
    ],
    ids=["trained-run", "dataset", "user-folder", "file"],
)
def test_anything_but_a_converted_checkpoint_is_refused_and_left_whole(
    tmp_path, char_data, source, make, needles, force
):
    target = make(tmp_path, char_data)
    before = snapshot(target)
    siblings = sorted(p.name for p in tmp_path.iterdir())
    result = invoke("convert", source, target, *["--force"] * force)
    one_error_line(result, f"OUT_DIR {target} ", *needles,
                   "--force replaces only a checkpoint convert wrote")  # fmt: skip
    assert "pass --force" not in result.output  # --force would not help
    assert snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == siblings  # no temporary left beside


def test_a_converted_checkpoint_trained_in_since_is_refused(tmp_path, char_data, source):
    run = converted_then_trained(tmp_path, char_data, source)
    before = snapshot(run)
    one_error_line(invoke("convert", source, run, "--force"), "a training run's metrics.jsonl")
    assert snapshot(run) == before
    with pytest.raises(GptcliError, match="metrics.jsonl"):
        convert(source, run, force=True)
    assert snapshot(run) == before


def test_force_replaces_an_earlier_convert(tmp_path, source):
    out = tmp_path / "converted"
    assert invoke("convert", source, out).exit_code == 0
    assert json.loads((out / CONVERTED_FILE).read_text())["converted_from"] == str(source)
    before = snapshot(out)
    one_error_line(invoke("convert", source, out), "holds a checkpoint convert wrote",
                   "pass --force to replace it")  # fmt: skip
    assert snapshot(out) == before
    (out / "stale.txt").write_text("left by an earlier convert's user")
    result = invoke("convert", source, out, "--force")
    assert result.exit_code == 0, result.output
    assert not (out / "stale.txt").exists() and (out / CONVERTED_FILE).is_file()
    assert checkpoint.load(out).step == 0


def test_an_empty_directory_needs_force_as_before(tmp_path, source):
    out = tmp_path / "empty"
    out.mkdir()
    one_error_line(invoke("convert", source, out), "already exists", "pass --force")
    assert invoke("convert", source, out, "--force").exit_code == 0
    assert checkpoint.load(out).step == 0


def test_an_out_dir_around_or_inside_the_source_is_refused(source, tmp_path):
    # An earlier convert's OUT_DIR with the download kept inside it: --force would delete it.
    earlier = tmp_path / "ckpt"
    convert(source, earlier)
    inside = earlier / "hf"
    inside.mkdir()
    for f in source.iterdir():
        (inside / f.name).write_bytes(f.read_bytes())
    before = snapshot(earlier)
    one_error_line(invoke("convert", inside, earlier, "--force"), "overlap")
    one_error_line(invoke("convert", source, source / "sub"), "overlap")
    assert snapshot(earlier) == before and not (source / "sub").exists()
