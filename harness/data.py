"""Task spec -> examples: read a split from the hub, local files or a packaged corpus."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from harness.config import SourceConfig, TaskConfig
from harness.corpora import CORPORA
from harness.errors import HarnessError
from harness.hub import hub_offline_by_choice, require_hub

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Example:
    id: str
    fields: Mapping[str, str]
    label: str  # a label name of the task


def load_split(task: TaskConfig, split: str) -> list[Example]:
    if task.data_dir is not None:
        if task.files is None:
            raise HarnessError(f"task '{task.name}' has no `files` section, so task.data_dir cannot be used")
        rows, source = _file_rows(task, split), task.files
    elif task.hub is not None:
        rows, source = _hub_rows(task, split), task.hub
    elif task.corpus is not None:
        rows, source = _corpus_rows(task, split), SourceConfig()
    else:
        raise HarnessError(f"task '{task.name}' names no data source (data_dir + files, hub or corpus)")
    return _to_examples(task, source, split, rows)


def _split_name(task: TaskConfig, source: SourceConfig, split: str) -> str:
    if split not in source.splits:
        raise HarnessError(f"task '{task.name}' has no split '{split}' (has: {', '.join(source.splits)})")
    return source.splits[split]


def _file_rows(task: TaskConfig, split: str) -> Iterable[dict[str, Any]]:
    path = Path(task.data_dir).expanduser() / _split_name(task, task.files, split)
    if not path.is_file():
        raise HarnessError(f"data file not found: {path}")
    builder = FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise HarnessError(f"cannot read {path}: use one of {', '.join(FILE_BUILDERS)}")
    _check_readable(path, text=builder != "parquet")
    options: dict[str, Any] = {}
    if builder == "csv":
        options = {"delimiter": "\t" if path.suffix.lower() == ".tsv" else ",", "keep_default_na": False}
    return _load_dataset(builder, data_files={"rows": str(path.resolve())}, split="rows", where=path, **options)


def _check_readable(path: Path, text: bool) -> None:
    """The faults datasets reports only as "An error occurred while generating the dataset"."""
    try:
        content = path.read_bytes()
    except OSError as error:
        raise HarnessError(f"cannot read data file {path}: {error.strerror or error}") from None
    if not content.strip():
        raise HarnessError(f"data file {path} is empty")
    if text:
        try:
            content.decode("utf-8")
        except UnicodeDecodeError as error:
            raise HarnessError(f"data file {path} is not UTF-8 text (byte 0x{content[error.start]:02x} at offset "
                               f"{error.start}); convert it, e.g. iconv -f latin1 -t utf-8") from None


def _hub_rows(task: TaskConfig, split: str) -> Iterable[dict[str, Any]]:
    hub = task.hub
    split_name = _split_name(task, hub, split)
    if not hub_offline_by_choice():  # with HF_HUB_OFFLINE=1, datasets serves its cache or fails at once
        require_hub(f"dataset '{hub.path}'", hint="set HF_HUB_OFFLINE=1 to use a cached copy, or set task.data_dir")
    return _load_dataset(hub.path, hub.name, split=split_name, revision=hub.revision, where=hub.path)


def _load_dataset(*args: Any, where: Path | str, **kwargs: Any) -> Iterable[dict[str, Any]]:
    import datasets

    try:
        return datasets.load_dataset(*args, **kwargs)
    except Exception as error:  # datasets raises many types; the user needs the message only
        raise HarnessError(f"cannot load dataset {str(where)!r}: {_root_cause(error)}") from None


def _root_cause(error: BaseException) -> str:
    """The error's first line; when datasets wraps a parse error in "An error occurred while generating the
    dataset" (which says neither what nor where), the innermost cause's instead."""
    outer = _first_line(error)
    if not outer.startswith("An error occurred while generating the dataset"):
        return outer
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


@functools.cache
def _corpus(name: str) -> dict[str, list[dict[str, str]]]:
    if name not in CORPORA:
        raise HarnessError(f"unknown corpus '{name}' (known: {', '.join(CORPORA)})")
    return CORPORA[name]()


def _corpus_rows(task: TaskConfig, split: str) -> Iterable[dict[str, Any]]:
    splits = _corpus(task.corpus)
    if split not in splits:
        raise HarnessError(f"task '{task.name}' has no split '{split}' (has: {', '.join(splits)})")
    return splits[split]


def _to_examples(task: TaskConfig, source: SourceConfig, split: str, rows: Iterable[dict[str, Any]]) -> list[Example]:
    columns = {name: source.columns.get(name, name) for name in [*task.fields, "label"]}
    id_column = source.columns.get("id", "id")
    label_names = {str(raw): name for raw, name in source.label_values.items()}
    unknown = set(label_names.values()) - set(task.labels)
    if unknown:
        raise HarnessError(f"task '{task.name}': label_values map to unknown labels {sorted(unknown)}")
    examples = []
    for index, row in enumerate(rows):
        missing = [column for column in columns.values() if column not in row]
        if missing:
            raise HarnessError(
                f"task '{task.name}' split '{split}': column(s) {missing} not in the data (has: {', '.join(row)})"
            )
        raw_label = str(row[columns["label"]])
        label = label_names.get(raw_label, raw_label)
        if label not in task.labels:
            raise HarnessError(
                f"task '{task.name}' split '{split}': label value {raw_label!r} is not a label of the task "
                f"(labels: {', '.join(task.labels)}; map it in label_values)"
            )
        example_id = str(row[id_column]) if id_column in row else f"{split}-{index}"
        fields = {name: str(row[columns[name]]) for name in task.fields}
        examples.append(Example(id=example_id, fields=fields, label=label))
    if not examples:
        raise HarnessError(f"task '{task.name}' split '{split}' is empty")
    return examples
