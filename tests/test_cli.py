"""End to end through the real command line: prepare -> train -> sample, and its failures."""

import json
import re
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from gptcli.cli import app

from .conftest import REPO

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def write_config(tmp_path, data_dir, **extra):
    cfg = {
        "data": {"dir": str(data_dir)},
        "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32},
        "train": {
            "batch_size": 8,
            "max_iters": 60,
            "lr": 3e-3,
            "min_lr": 3e-4,
            "warmup_iters": 5,
            "eval_interval": 30,
            "eval_iters": 4,
            "device": "cpu",
        },
        "sample": {"max_new_tokens": 50, "temperature": 0.8},
    }
    for section, values in extra.items():
        cfg[section].update(values)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_prepare_train_sample_end_to_end(tmp_path, corpus):
    data = tmp_path / "data"
    result = invoke("prepare", "--input", corpus, "--tokenizer", "char", "--out", data)
    assert result.exit_code == 0, result.output
    assert "train tokens" in result.output

    config = write_config(tmp_path, data)
    run = tmp_path / "run"
    result = invoke("train", "--config", config, "--out", run, "--set", "train.log_interval=10")
    assert result.exit_code == 0, result.output
    assert "best val loss" in result.output
    evals = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    evals = [e["val_loss"] for e in evals if "val_loss" in e]
    assert len(evals) == 3 and evals[-1] < evals[0] - 0.5

    result = invoke(
        "sample",
        "--checkpoint",
        run,
        "--prompt",
        "The cat",
        "--max-new-tokens",
        40,
        "--num-samples",
        2,
        "--seed",
        1,
    )
    assert result.exit_code == 0, result.output
    samples = result.output.rstrip("\n").split("\n" + "-" * 40 + "\n")
    assert len(samples) == 2
    for text in samples:
        assert text.startswith("The cat") and len(text) == len("The cat") + 40
    again = invoke(
        "sample",
        "--checkpoint",
        run,
        "--prompt",
        "The cat",
        "--max-new-tokens",
        40,
        "--num-samples",
        2,
        "--seed",
        1,
    )
    assert again.output == result.output

    greedy = invoke("sample", "--checkpoint", run, "--temperature", 0, "--max-new-tokens", 10)
    assert greedy.exit_code == 0 and len(greedy.output) == 10 + 1  # no prompt, plus echo's newline


def one_error_line(result, *needles):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0]


def test_bad_inputs_exit_2_with_one_line(tmp_path, char_data):
    config = write_config(tmp_path, char_data)
    one_error_line(invoke("train", "--config", config, "--set", "model.n_layers=3"), "n_layer")
    one_error_line(invoke("train", "--config", tmp_path / "missing.yaml"), "not found")
    one_error_line(
        invoke("train", "--config", write_config(tmp_path, tmp_path / "nodata")),
        "not a prepared dataset",
    )
    one_error_line(
        invoke("prepare", "--input", tmp_path / "none.txt", "--tokenizer", "char"), "none.txt"
    )
    one_error_line(invoke("sample", "--checkpoint", tmp_path / "none"), "not found")


def test_sample_errors(tmp_path, char_data):
    run = tmp_path / "run"
    config = write_config(tmp_path, char_data, train={"max_iters": 2, "eval_interval": 2})
    assert invoke("train", "--config", config, "--out", run).exit_code == 0
    again = invoke("train", "--config", config, "--out", run, "--resume")  # a finished run
    assert again.exit_code == 0 and "note: the run was already at step 2, its train.max_iters; " \
        "nothing was trained" in " ".join(again.output.split()), again.output
    one_error_line(invoke("sample", "--checkpoint", run, "--prompt", "ü"), "'ü'")
    weights = run / "step-0000002" / "model.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    one_error_line(invoke("sample", "--checkpoint", run), "corrupt")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["sample", "--max-new-tokens", "-5"], "'--max-new-tokens'"),
        (["sample", "--max-new-tokens", "many"], "'--max-new-tokens'"),
        (["train", "--bogus"], "--bogus"),
        (["train"], "'--config'"),
        (["fly"], "'fly'"),
    ],
)
def test_usage_errors_are_one_line_naming_the_help(args, needle):
    # Typer's own refusals (before any gptcli code runs) end as gptcli's do, not in a box.
    where = f"gptcli {args[0]} --help" if args[0] != "fly" else "gptcli --help"
    one_error_line(runner.invoke(app, args, prog_name="gptcli"), needle, where)


def test_version():
    from gptcli import __version__

    done = runner.invoke(app, ["--version"])
    assert done.exit_code == 0 and done.output == f"gptcli {__version__}\n"


def test_exit_codes_through_the_real_entry_point():
    def run(*args):
        return subprocess.run([sys.executable, "-m", "gptcli", *args], capture_output=True,
                              text=True, cwd=REPO)  # fmt: skip

    bad = run("compare", "--bogus")
    assert bad.returncode == 2 and bad.stdout == "", bad
    expected = "error: No such option: --bogus (see python -m gptcli compare --help)"
    assert bad.stderr.splitlines() == [expected], bad.stderr
    bare = run()  # the help, as before, and 2: nothing was done
    assert bare.returncode == 2 and "Usage: python -m gptcli" in bare.stdout, bare


def test_python_dash_m_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "gptcli", "--help"], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0
    for command in ("prepare", "train", "sample"):
        assert command in out.stdout


def commands() -> dict:
    import typer.main

    from gptcli.cli import app

    group = typer.main.get_command(app)
    return {name: group.get_command(None, name) for name in group.list_commands(None)}


def test_every_command_has_help_naming_each_of_its_options():
    found = commands()
    assert {"prepare", "train", "sample", "eval", "sweep", "compare", "report", "inspect",
            "export", "convert"} <= set(found)  # fmt: skip
    for name, command in found.items():
        result = invoke(name, "--help")
        assert result.exit_code == 0, name
        assert re.search(rf"Usage: \S+ {name} ", " ".join(result.output.split())), name
        for param in command.params:
            for opt in (o for o in param.opts if o.startswith("--")):
                assert opt in result.output, f"{name} --help does not show {opt}"
        assert command.help and command.help.split()[0] in result.output, name


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny char model trained once for the sampling tests of this module."""
    from gptcli.data.prepare import prepare

    from .conftest import make_text

    tmp = tmp_path_factory.mktemp("sampling")
    (tmp / "corpus.txt").write_text(make_text())
    data = prepare(input_path=tmp / "corpus.txt", tokenizer="char", out_dir=tmp / "data").out_dir
    config = write_config(tmp, data, model={"position": "rope"})
    assert invoke("train", "--config", config, "--out", tmp / "run").exit_code == 0
    return tmp / "run"


def test_stop_strings_end_the_sample_without_showing(trained_run):
    args = ["sample", "--checkpoint", trained_run, "--prompt", "The", "--seed", "3"]
    full = invoke(*args, "--max-new-tokens", 200).output
    stop = full[len("The") :].split(".")[0][-3:] + "."  # text the sample is known to reach
    result = invoke(*args, "--max-new-tokens", 200, "--stop", stop)
    assert result.exit_code == 0
    assert result.output == full[: full.index(stop, len("The"))] + "\n"


def test_streamed_output_equals_the_batch_output(trained_run):
    args = ["sample", "--checkpoint", trained_run, "--max-new-tokens", 60, "--seed", "4"]
    streamed = invoke(*args, "--stream", "--prompt", "A")
    plain = invoke(*args, "--no-stream", "--prompt", "A")
    assert streamed.exit_code == plain.exit_code == 0
    assert streamed.output == plain.output and len(plain.output) == 1 + 60 + 1


def test_prompt_file_and_no_window(trained_run, tmp_path):
    (tmp_path / "p.txt").write_text("The dog")
    args = ["sample", "--checkpoint", trained_run, "--max-new-tokens", 80, "--temperature", 0]
    from_file = invoke(*args, "--prompt-file", tmp_path / "p.txt", "--no-window")
    assert from_file.exit_code == 0 and from_file.output.startswith("The dog")
    assert len(from_file.output) == len("The dog") + 80 + 1  # past block_size=32: rope allows it


def test_python_api(trained_run):
    import gptcli

    # The API samples in fp32 unless asked; the command line in auto (the faster here, measured
    # once and remembered: see sampling_precision): each gives what the other gives in the
    # same precision, auto included, since both read the one measurement.
    from gptcli import cpu

    cases = (("fp32", ["--precision", "fp32"]), ("auto", []), ("bf16", ["--precision", "bf16"]))
    for precision, cli_args in cases:
        model = gptcli.load(trained_run, device="cpu", precision=precision)
        choices = ("fp32", "bf16") if cpu.has_native_bf16() else ("fp32",)
        assert model.precision in ({"auto": choices}.get(precision) or (precision,))
        text = "".join(model.generate("The", max_new_tokens=30, seed=1))
        assert len(text) == 30
        assert text == "".join(model.generate("The", max_new_tokens=30, seed=1))
        cli = invoke("sample", "--checkpoint", trained_run, "--prompt", "The", "--seed", 1,
                     "--max-new-tokens", 30, "--no-stream", *cli_args)  # fmt: skip
        assert cli.output == "The" + text + "\n"
    # Scoring in bf16 (weights cast and packed, batches of windows) stays near fp32's score.
    text = "The cat sat on the mat and the dog ran. " * 8
    fp32, bf16 = (gptcli.load(trained_run, device="cpu", precision=p).score(text) for p in
                  ("fp32", "bf16"))  # fmt: skip
    assert fp32.tokens == bf16.tokens and fp32.loss != bf16.loss
    assert bf16.loss == pytest.approx(fp32.loss, rel=0.02)


def test_learned_positions_refuse_no_window(tmp_path, char_data):
    config = write_config(tmp_path, char_data, train={"max_iters": 2, "eval_interval": 2})
    assert invoke("train", "--config", config, "--out", tmp_path / "run").exit_code == 0
    result = invoke("sample", "--checkpoint", tmp_path / "run", "--no-window")
    one_error_line(result, "block_size=32")


def test_more_bad_inputs_exit_2(tmp_path, trained_run, corpus):
    one_error_line(invoke("sample", "--checkpoint", trained_run, "--device", "foo"), "foo")
    scene = tmp_path / "scene.txt"
    scene.write_text("the cat")
    both = invoke("sample", "--checkpoint", trained_run, "--prompt", "a", "--prompt-file", scene)
    one_error_line(both, "--prompt or --prompt-file, not both")
    one_error_line(invoke("sample", "--checkpoint", trained_run, "--precision", "fp8"), "fp8")
    fp16 = invoke("sample", "--checkpoint", trained_run, "--precision", "fp16", "--device", "cpu")
    one_error_line(fp16, "precision fp16 needs a CUDA device")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text(corpus.read_text())
    for out in (src, src / "inner"):
        result = invoke("prepare", "--input", src, "--out", out, "--tokenizer", "char", "--force")
        one_error_line(result, "overlap")
    assert sorted(p.name for p in src.iterdir()) == ["a.txt"]


def test_stream_error_prints_nothing_before_it(tmp_path, char_data):
    config = write_config(tmp_path, char_data, train={"max_iters": 2, "eval_interval": 2})
    assert invoke("train", "--config", config, "--out", tmp_path / "run").exit_code == 0
    result = invoke("sample", "--checkpoint", tmp_path / "run", "--prompt", "The", "--stream",
                    "--no-window")  # fmt: skip
    one_error_line(result, "block_size")


def test_corrupt_run_state_is_one_line(tmp_path, char_data):
    import torch

    config = write_config(tmp_path, char_data, train={"max_iters": 2, "eval_interval": 2})
    run = tmp_path / "run"
    assert invoke("train", "--config", config, "--out", run).exit_code == 0
    trainer = run / "step-0000002" / "trainer.pt"
    state = torch.load(trainer, weights_only=True)
    del state["scaler"]
    torch.save(state, trainer)
    resume = ["train", "--config", config, "--out", run, "--resume", "--set", "train.max_iters=4"]
    one_error_line(invoke(*resume), "incomplete")
    (run / "checkpoints.json").write_text('{"latest": 3}')
    one_error_line(invoke("sample", "--checkpoint", run), "corrupt")
    meta = json.loads((char_data / "meta.json").read_text())
    del meta["tokens"]
    (char_data / "meta.json").write_text(json.dumps(meta))
    one_error_line(invoke("train", "--config", config, "--out", tmp_path / "r2"), "corrupt")


@pytest.mark.slow
def test_sample_exits_at_once_with_its_whole_output_and_code(trained_run, tmp_path):
    # sample skips the interpreter's teardown (os._exit): what it printed must still all arrive
    # through a pipe, and its exit code with it.
    def gptcli(*args):
        return subprocess.run([sys.executable, "-m", "gptcli", *map(str, args)],
                              capture_output=True, text=True, cwd=REPO)  # fmt: skip

    args = ["sample", "--checkpoint", trained_run, "--prompt", "The", "--seed", 1]
    ok = gptcli(*args, "--max-new-tokens", 500, "--num-samples", 3)
    samples = ok.stdout.rstrip("\n").split("\n" + "-" * 40 + "\n")
    assert ok.returncode == 0 and [len(s) for s in samples] == [len("The") + 500] * 3
    bad = gptcli("sample", "--checkpoint", tmp_path / "none")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not found" in bad.stderr


@pytest.mark.slow
def test_commands_import_the_library_with_the_collector_off_then_frozen():
    # In a child: the freeze must not reach the test process. The collector is on again after
    # (and off, had it been off before), the import's objects are frozen, and no collection ran
    # during the import; each command's library module exists.
    code = """
import gc, json, sys
from gptcli.cli import LIBRARY, import_frozen
runs = []
gc.callbacks.append(lambda phase, info: phase == "start" and runs.append(info["generation"]))
import_frozen("gptcli.generate")
on = (gc.isenabled(), gc.get_freeze_count(), runs, "torch" in sys.modules)
gc.disable()
import_frozen("json.decoder")
off = gc.isenabled()
for module in LIBRARY.values():
    import_frozen(module)
print(json.dumps([*on, off]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    enabled, frozen, collections, torch_loaded, enabled_after_off = json.loads(out.stdout)
    assert enabled and not enabled_after_off and torch_loaded
    assert collections == [] and frozen > 100_000


def _description(command: str, columns: int) -> list[list[str]]:
    """The paragraphs of a command's --help text above its options, as printed lines."""
    done = runner.invoke(app, [command, "--help"], env={"COLUMNS": str(columns)})
    assert done.exit_code == 0, done.output
    text = done.output.split("╭")[0].split("Usage:", 1)[1].split("\n", 1)[1]
    paragraphs = [[line.strip() for line in block.splitlines() if line.strip()]
                  for block in re.split(r"\n\s*\n", text) if block.strip()]  # fmt: skip
    assert all(len(line) <= columns for p in paragraphs for line in p)
    return paragraphs


@pytest.mark.parametrize("command", [c.name or c.callback.__name__
                                     for c in app.registered_commands])  # fmt: skip
def test_help_wraps_as_paragraphs_at_any_width(command):
    # At 200 columns a paragraph runs to the edge before it wraps; at 60, every line but a
    # paragraph's last is nearly full: no sentence broken where the docstring broke its line.
    for columns in (60, 200):
        for paragraph in _description(command, columns):
            for line, following in zip(paragraph, paragraph[1:], strict=False):
                room = columns - 4 - len(line)  # what the next line's first word had to fit
                assert room < len(following.split()[0]) + 1, (columns, line, following)
