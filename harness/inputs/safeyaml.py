"""YAML from files a user may have downloaded from anyone (task, template and group files): read with bounds.

yaml.safe_load refuses Python tags but not an alias bomb: nine levels of nine `*a` aliases are a
200-byte file that composes in a millisecond as shared nodes and expands to 9^9 strings in whatever
walks it next (OmegaConf, hashing, printing), which hangs the command. Here a document is composed,
measured as it would expand (each node counted once per place it appears, aliases included, in time
linear in the file) and refused above MAX_NODES, as are a file over MAX_BYTES, nesting deeper than
MAX_DEPTH and an alias to itself. Every refusal, and every YAML syntax error, is one line.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError

SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, when built: ~10x faster
MAX_BYTES = 4 * 2**20  # the built-in task and template files are at most a few KiB
MAX_NODES = 100_000  # scalars, sequences and mappings, counted as expanded
MAX_DEPTH = 64


def read_yaml_file(path: Path, what: str) -> Any:
    """The YAML document in `path`; `what` names the file in errors ("task file", "template")."""
    return load_yaml(read_bounded(path, what), f"{what} {path}")


def read_bounded(path: Path, what: str) -> bytes:
    """The bytes of a regular file of at most MAX_BYTES (a YAML file to give load_yaml)."""
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):  # a FIFO or a device would block or never end
            raise HarnessError(f"cannot read {what} {path}: not a regular file")
        if status.st_size > MAX_BYTES:
            raise HarnessError(f"cannot read {what} {path}: {status.st_size:,} bytes, more than the "
                               f"{MAX_BYTES // 2**20} MiB a {what} may have")
        return path.read_bytes()
    except OSError as error:
        raise HarnessError(f"cannot read {what} {path}: {one_line(error)}") from None


def load_yaml(content: bytes | str, where: str) -> Any:
    """One YAML document in UTF-8, bounded as the module says; `where` starts every error."""
    try:
        text = content.decode("utf-8") if isinstance(content, bytes) else content
    except UnicodeDecodeError as error:
        raise HarnessError(f"cannot read {where}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    loader = SAFE_LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        raise HarnessError(f"cannot read {where}: {one_line(error)}") from None
    except RecursionError:  # nesting deeper than the composer itself can follow
        raise HarnessError(f"cannot read {where}: nested too deeply") from None
    finally:
        loader.dispose()


def _check_size(root: yaml.Node, where: str) -> None:
    """Raise when the document, expanded, has more than MAX_NODES nodes or more than MAX_DEPTH levels."""
    expanded: dict[int, int] = {}  # node id -> its size expanded: each shared node is measured once
    open_nodes: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        if id(node) in expanded:
            return expanded[id(node)]
        if id(node) in open_nodes:
            raise HarnessError(f"cannot read {where}: an alias refers to a node that contains it (line "
                               f"{node.start_mark.line + 1})")
        if depth > MAX_DEPTH:
            raise HarnessError(f"cannot read {where}: nested more than {MAX_DEPTH} levels deep (line "
                               f"{node.start_mark.line + 1})")
        open_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > MAX_NODES:
                raise HarnessError(f"cannot read {where}: it expands to more than {MAX_NODES:,} values (aliases "
                                   "repeat what they refer to; an alias bomb?)")
        open_nodes.discard(id(node))
        expanded[id(node)] = total
        return total

    size(root, 0)


def one_line(error: BaseException) -> str:
    """An exception's message on one line: YAML's marked errors as "context (line, column) problem (line,
    column)", others with their line breaks folded."""
    if isinstance(error, yaml.MarkedYAMLError):
        parts = [f"{' '.join(text.split())}{_at(mark)}" for text, mark in ((error.context, error.context_mark),
                                                                          (error.problem, error.problem_mark)) if text]
        return " ".join(parts) or type(error).__name__
    return " ".join(str(error).split()) or type(error).__name__


def _at(mark: yaml.Mark | None) -> str:
    return "" if mark is None else f" (line {mark.line + 1}, column {mark.column + 1})"
