"""The one Jinja sandbox that renders templates and evaluates the small expressions of task files.

Task files and templates are data a user may download from anyone, so they run in Jinja's
SandboxedEnvironment (no attribute access to Python internals) with strict undefined variables:
a typo in a field name fails instead of rendering as nothing. Besides Jinja's built-in filters,
`regex_replace(pattern, replacement)` covers the text clean-up that benchmark preprocessing needs
(HellaSwag's bracketed WikiHow artefacts), so no task needs Python.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Callable, Mapping

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from harness.errors import HarnessError


def _regex_replace(value: str, pattern: str, replacement: str = "") -> str:
    return re.sub(pattern, replacement, value)


ENVIRONMENT = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
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
            return expression(**row)
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as error:
            raise HarnessError(f"{where}: the expression {source!r} failed on a row ({type(error).__name__}: "
                               f"{error}); the row has: {', '.join(map(str, row))}") from None

    return evaluate
