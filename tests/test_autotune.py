"""gptcli.autotune: the fastest option, measured once per machine and workload, remembered."""

import json
import time

import pytest
import torch

from gptcli import autotune

NAMES = ("slow", "fast")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTCLI_CACHE_DIR", str(tmp_path))
    return tmp_path / autotune.FILE


def sleeper(seconds, calls, name):
    def run():
        calls.append(name)
        time.sleep(seconds)

    return run


def test_the_faster_option_wins_and_is_remembered(cache):
    calls = []
    options = {"slow": sleeper(0.02, calls, "slow"), "fast": sleeper(0.002, calls, "fast")}
    assert autotune.fastest({"task": "t"}, NAMES, lambda: options, default="slow") == "fast"
    # Warm-up plus alternated rounds, the same number for each option.
    assert calls.count("slow") == calls.count("fast") >= 2
    entry = next(iter(json.loads(cache.read_text()).values()))
    assert entry["choice"] == "fast" and entry["for"]["task"] == "t"
    assert entry["seconds"]["slow"] > entry["seconds"]["fast"]
    assert entry["for"]["threads"] == torch.get_num_threads() and entry["for"]["cpu"]
    # Asked again, even with the speeds swapped: the remembered answer, nothing built or run.
    calls.clear()
    swapped = {"slow": sleeper(0.0, calls, "slow"), "fast": sleeper(0.02, calls, "fast")}

    def never():
        raise AssertionError("a remembered choice builds nothing")

    assert autotune.fastest({"task": "t"}, NAMES, never, default="slow") == "fast" and calls == []
    # Another workload, or another thread count, is measured afresh.
    assert autotune.fastest({"task": "u"}, NAMES, lambda: swapped, default="fast") == "slow"
    calls.clear()
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        autotune.fastest({"task": "t"}, NAMES, lambda: swapped, default="fast")
    finally:
        torch.set_num_threads(threads)
    assert calls
    assert len(json.loads(cache.read_text())) == 3


def test_work_too_big_to_time_within_the_budget_takes_the_default(cache):
    calls = []
    options = {"a": sleeper(0.03, calls, "a"), "b": sleeper(0.001, calls, "b")}
    assert autotune.fastest({"task": "big"}, ("a", "b"), lambda: options, default="a",
                            budget=0.05) == "a"  # fmt: skip
    assert calls == ["a", "b"]  # the warm-up round only
    assert next(iter(json.loads(cache.read_text()).values()))["choice"] == "a"


def test_it_chooses_where_nothing_can_be_remembered(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("GPTCLI_CACHE_DIR", str(blocker / "cache"))
    options = {"slow": sleeper(0.02, [], "slow"), "fast": sleeper(0.0, [], "fast")}
    assert autotune.fastest({"task": "t"}, NAMES, lambda: options, default="slow") == "fast"


def test_a_damaged_cache_is_measured_over(cache):
    cache.write_text("{not json")
    options = {"slow": sleeper(0.02, [], "slow"), "fast": sleeper(0.0, [], "fast")}
    assert autotune.fastest({"task": "t"}, NAMES, lambda: options, default="slow") == "fast"
    assert len(json.loads(cache.read_text())) == 1


def test_the_cache_lives_where_the_environment_says(monkeypatch, tmp_path):
    monkeypatch.delenv("GPTCLI_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert autotune.cache_dir() == tmp_path / "gptcli"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert autotune.cache_dir() == tmp_path / ".cache" / "gptcli"
