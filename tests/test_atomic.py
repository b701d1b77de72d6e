import os
from pathlib import Path

import pytest

from gptcli import atomic
from gptcli.errors import GptcliError


def test_new_dir_replaces_whole_or_not_at_all(tmp_path):
    out = tmp_path / "out"
    with atomic.new_dir(out) as tmp:
        (tmp / "a").write_text("1")
    assert (out / "a").read_text() == "1"
    with pytest.raises(RuntimeError), atomic.new_dir(out) as tmp:
        (tmp / "a").write_text("2")
        raise RuntimeError("half-way")
    assert (out / "a").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_old_dir_comes_back_if_the_new_one_cannot_move_in(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a").write_text("old")
    real = os.replace

    def failing(src, dst):
        if ".tmp-" in str(src):  # the new directory moving in
            raise OSError("disk on fire")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing)
    with pytest.raises(OSError), atomic.new_dir(out) as tmp:
        (tmp / "a").write_text("new")
    assert (out / "a").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_json_and_bytes(tmp_path):
    atomic.write_json(tmp_path / "x.json", {"k": "ü"})
    assert (tmp_path / "x.json").read_text(encoding="utf-8") == '{\n  "k": "ü"\n}\n'
    atomic.write_bytes(tmp_path / "b", b"\x00\x01")
    assert (tmp_path / "b").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "x.json"]


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755),
                                                            (0o077, 0o600, 0o700)])  # fmt: skip
def test_written_files_and_directories_get_the_modes_the_umask_gives(tmp_path, mask, file_mode,
                                                                      dir_mode):  # fmt: skip
    old = os.umask(mask)
    try:
        atomic.write_bytes(tmp_path / "a.bin", b"x")
        with atomic.new_dir(tmp_path / "d") as d:
            (d / "f").write_text("y")
    finally:
        os.umask(old)
    # As open() and mkdir() would make them, not tempfile's private 0600 and 0700 whatever the
    # umask.
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "d").stat().st_mode & 0o777 == dir_mode


def test_an_out_dir_that_cannot_be_read_is_one_line(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()

    def unreadable(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "iterdir", unreadable)
    with pytest.raises(GptcliError, match=r"^--out .*out: cannot read it \(Permission denied\)$"):
        atomic.check_replace(out, True, label="--out", what="a dataset",
                             why_not_ours=lambda p: None)  # fmt: skip
