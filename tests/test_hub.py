"""Hub ids: a cached model loads without the hub (no retries), an uncached one fails in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.sources import hub


@pytest.fixture()
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A hub cache holding 'org/cached' (the layout huggingface_hub writes), the hub out of reach."""
    snapshot = tmp_path / "hub" / "models--org--cached" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--org--cached" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--cached" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    return tmp_path


def test_cached_model_loads_from_files_when_the_hub_is_out_of_reach(hub_cache: Path) -> None:
    assert hub.resolve_model_source("org/cached", None, "model", hint="") == ("org/cached", True)


def test_uncached_model_fails_fast_when_the_hub_is_out_of_reach(hub_cache: Path) -> None:
    with pytest.raises(HarnessError, match="model 'org/missing' must come from the Hugging Face hub"):
        hub.resolve_model_source("org/missing", None, "model", hint="use a local path")


def test_local_paths(tmp_path: Path) -> None:
    assert hub.resolve_model_source(str(tmp_path), None, "model", hint="") == (str(tmp_path), False)
    with pytest.raises(HarnessError, match="model path not found"):
        hub.resolve_model_source("./nowhere", None, "model", hint="")


def test_the_commit_of_a_hub_model_enters_the_run_key(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hub.hub_commit("org/cached", None) == "abc123"  # out of reach: the cached snapshot
    with pytest.raises(HarnessError, match="model 'org/missing' must come from the Hugging Face hub"):
        hub.hub_commit("org/missing", None)
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)  # in reach: what the branch points to now
    asked = []

    def model_info(self, path, revision=None):
        asked.append((path, revision))
        return type("Info", (), {"sha": "def456"})()

    monkeypatch.setattr("huggingface_hub.HfApi.model_info", model_info)
    assert hub.hub_commit("org/cached", "main") == "def456" and asked == [("org/cached", "main")]
