"""The one Jinja sandbox that renders templates and evaluates the small expressions of task files, and the one
regular-expression engine for the patterns those files give.

Task files and templates are data a user may download from anyone, so they run in Jinja's
SandboxedEnvironment (no attribute access to Python internals) with strict undefined variables:
a typo in a field name fails instead of rendering as nothing. Besides Jinja's built-in filters,
`regex_replace(pattern, replacement)` covers the text clean-up that benchmark preprocessing needs
(HellaSwag's bracketed WikiHow artefacts), so no task needs Python.

A pattern from a file ((a|aa)+$ and its like) can backtrack for longer than the universe lasts on a
40-character field: every such pattern (regex_replace, a short-answer task's answer filters and
regexes_to_ignore) runs on the `regex` package, re's semantics with a time limit, and one that takes
longer than PATTERN_TIMEOUT_S on one text stops the run in one line.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Mapping

import jinja2
import regex
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from harness.errors import HarnessError

PATTERN_TIMEOUT_S = 1.0  # the built-in tasks' patterns take microseconds per text


@lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> regex.Pattern:
    """A user's pattern, with re's syntax and semantics (regex's VERSION0); HarnessError when it is not one."""
    try:
        return regex.compile(pattern, flags=regex.VERSION0)
    except (regex.error, TypeError) as error:
        raise HarnessError(f"{pattern!r} is not a regular expression ({error})") from None


def pattern_sub(pattern: str, replacement: str, text: str) -> str:
    try:
        return compile_pattern(pattern).sub(replacement, text, timeout=PATTERN_TIMEOUT_S)
    except TimeoutError:
        raise _too_slow(pattern, len(text)) from None
    except (regex.error, IndexError) as error:  # a replacement naming a group the pattern lacks
        raise HarnessError(f"the replacement {replacement!r} does not fit {pattern!r} ({error})") from None


def pattern_findall(pattern: str, text: str) -> list[Any]:
    try:
        return compile_pattern(pattern).findall(text, timeout=PATTERN_TIMEOUT_S)
    except TimeoutError:
        raise _too_slow(pattern, len(text)) from None


def _too_slow(pattern: str, length: int) -> HarnessError:
    return HarnessError(f"the regular expression {pattern!r} took over {PATTERN_TIMEOUT_S:g} s on a text of {length} "
                        "characters (it backtracks without end on some texts: nested repeats such as (a+)+ or "
                        "(a|aa)+); simplify it")


def _regex_replace(value: str, pattern: str, replacement: str = "") -> str:
    return pattern_sub(pattern, replacement, str(value))


class _BoundedSandbox(SandboxedEnvironment):
    """Jinja's sandbox, which bounds range() but not `*` and `**`: `'a' * 10**10` would take 10 GB, `9**9**9`
    minutes. A repeated string or list may have up to MAX_REPEATED items, a power an exponent up to MAX_EXPONENT."""

    MAX_REPEATED = 10_000_000
    MAX_EXPONENT = 1_000
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if (operator == "**" and isinstance(right, int) and isinstance(left, (int, float)) and abs(left) > 1
                and abs(right) > self.MAX_EXPONENT):
            raise SecurityError(f"a power with the exponent {right} is refused (at most {self.MAX_EXPONENT})")
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if (isinstance(sequence, (str, list, tuple)) and isinstance(count, int)
                        and len(sequence) * count > self.MAX_REPEATED):
                    raise SecurityError(f"repeating {len(sequence)} items {count} times is refused (at most "
                                        f"{self.MAX_REPEATED:,} in all)")
        return super().call_binop(context, operator, left, right)


ENVIRONMENT = _BoundedSandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
ENVIRONMENT.filters["regex_replace"] = _regex_replace


@lru_cache(maxsize=1024)
def compile_expression(source: str, where: str) -> Callable[[Mapping[str, Any]], Any]:
    """`source` as a Jinja expression over a row's columns ("choices.text", "[sol1, sol2]", "int(label)" is
    written "label | int"); `where` names the file and key for errors."""
    try:
        expression = ENVIRONMENT.compile_expression(source, undefined_to_none=False)
    except jinja2.TemplateSyntaxError as error:
        raise HarnessError(f"{where}: cannot read the expression {source!r}: {error.message}") from None

    def evaluate(row: Mapping[str, Any]) -> Any:
        try:
            return _defined(expression(**row))
        except HarnessError as error:
            raise HarnessError(f"{where}: the expression {source!r}: {error}") from None
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as error:
            raise HarnessError(f"{where}: the expression {source!r} failed on a row ({type(error).__name__}: "
                               f"{error}); the row has: {', '.join(map(str, row))}") from None

    return evaluate


def _defined(value: Any) -> Any:
    """The value, once nothing in it is undefined. The sandbox answers an unsafe attribute (`text.__class__`,
    `text.format.__globals__`) with an undefined value that raises only when used, which would be later, as the
    value is converted deep inside the run: it raises here instead, in the expression's own error."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, (list, tuple, set)):
        for item in value:
            _defined(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _defined(key)
            _defined(item)
    return value
