"""Examples -> prompts: Jinja few-shot templates rendered in a sandbox.

A template file (prompts/<task>/<name>.yaml) holds an optional instruction, the Jinja
source of one example with `{{ answer }}` where the label's verbalizer goes, the separator
between examples, and optionally its own verbalizers (answer_choices). A k-shot prompt is

    instruction + separator + demo_1 + separator + ... + demo_k + separator + query

where each demonstration is rendered with its gold verbalizer and the query is rendered up
to the answer. The whitespace just before the answer belongs to the scored continuation
(" positive" after "Sentiment:"), as in lm-evaluation-harness.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import jinja2
import yaml
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from harness.config import TaskConfig
from harness.data import Example
from harness.errors import HarnessError
from harness.registry import template_files

TEMPLATE_KEYS = {"description", "instruction", "example", "separator", "answer_choices"}
_ANSWER_MARK = "\x00answer\x00"
_ENVIRONMENT = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    instruction: str
    example: jinja2.Template
    separator: str
    verbalizers: Mapping[str, str]  # label name -> verbalizer, in the task's label order
    file_sha256: str = ""  # of the template's YAML file: part of the run key

    def render(self, example: Example, answer: str) -> str:
        try:
            return self.example.render(**example.fields, answer=answer)
        except jinja2.TemplateError as error:  # e.g. a sandbox violation or a bad filter
            raise HarnessError(f"template '{self.name}' failed on example {example.id}: {error}") from None


@dataclass(frozen=True)
class Prompt:
    """One test example's prompt, kept in segments so demonstrations can be dropped to fit."""

    example_id: str
    instruction: str  # "" or instruction + separator
    demonstrations: tuple[str, ...]  # each rendered with its answer, then the separator
    demo_ids: tuple[str, ...]
    query: str  # the test input up to the answer, without the whitespace before it
    continuations: tuple[str, ...]  # per label: that whitespace + verbalizer

    def context(self, dropped_demos: int = 0) -> str:
        """The text before the answer, without the first `dropped_demos` demonstrations."""
        return self.instruction + "".join(self.demonstrations[dropped_demos:]) + self.query


def load_template(task: TaskConfig, name: str) -> Template:
    files = template_files(task.name)
    if name not in files:
        known = ", ".join(files) or "none"
        raise HarnessError(f"unknown template '{name}' for task '{task.name}' (templates: {known})")
    path = files[name]
    try:
        raw = path.read_bytes()
        spec = yaml.safe_load(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise HarnessError(f"cannot read template {path}: {error}") from None
    if not isinstance(spec, dict) or "example" not in spec:
        raise HarnessError(f"template {path} must be a mapping with an `example` key")
    unknown = set(spec) - TEMPLATE_KEYS
    if unknown:
        raise HarnessError(f"template {path} has unknown keys {sorted(unknown)} (allowed: {sorted(TEMPLATE_KEYS)})")
    source = str(spec["example"])
    try:
        parsed = _ENVIRONMENT.parse(source)
    except jinja2.TemplateSyntaxError as error:
        raise HarnessError(f"template {path} line {error.lineno}: {error.message}") from None
    used = meta.find_undeclared_variables(parsed)
    missing = sorted(used - set(task.fields) - {"answer"})
    if missing:
        raise HarnessError(
            f"template '{name}' uses field(s) {missing} that task '{task.name}' does not have "
            f"(fields: {', '.join(task.fields)})"
        )
    if "answer" not in used:
        raise HarnessError(f"template {path} must place the label with {{{{ answer }}}}")
    if not used & set(task.fields):
        raise HarnessError(f"template {path} renders none of the fields of task '{task.name}' "
                           f"({', '.join(task.fields)}): every test example would get the same prompt")
    return Template(
        name=name,
        description=str(spec.get("description", "")),
        instruction=str(spec.get("instruction") or ""),
        example=_ENVIRONMENT.from_string(source),
        separator=str(spec.get("separator", "\n\n")),
        verbalizers=_verbalizers(task, spec.get("answer_choices"), path.name),
        file_sha256=hashlib.sha256(raw).hexdigest(),
    )


def _verbalizers(task: TaskConfig, answer_choices: Mapping[str, str] | None, where: str) -> dict[str, str]:
    verbalizers = {label: str(word) for label, word in task.labels.items()}
    if answer_choices is not None:
        if not isinstance(answer_choices, dict) or set(map(str, answer_choices)) != set(task.labels):
            raise HarnessError(f"{where}: answer_choices must give a verbalizer for each label: {list(task.labels)}")
        verbalizers = {label: str(answer_choices[label]) for label in task.labels}
    for label, word in verbalizers.items():
        if not word.strip():
            raise HarnessError(f"{where}: label '{label}' of task '{task.name}' has an empty verbalizer")
    seen: dict[str, str] = {}
    for label, word in verbalizers.items():
        if word.strip() in seen:
            raise HarnessError(f"{where}: labels '{seen[word.strip()]}' and '{label}' of task '{task.name}' have the "
                               f"same verbalizer '{word.strip()}', so they could never be told apart")
        seen[word.strip()] = label
    return verbalizers


def is_channel(template: Template, fields: Sequence[str]) -> bool:
    """A channel template puts the answer before every input field ("A {{ answer }} one . {{ text }}")."""
    rendered = template.render(_field_marks(fields), _ANSWER_MARK)
    answer_at = rendered.find(_ANSWER_MARK)
    return all(rendered.find(_field_mark(i)) > answer_at for i in range(len(fields)) if _field_mark(i) in rendered)


def build_prompt(template: Template, demonstrations: Sequence[Example], example: Example) -> Prompt:
    rendered = template.render(example, _ANSWER_MARK)
    if rendered.count(_ANSWER_MARK) != 1:
        raise HarnessError(f"template '{template.name}' must use {{{{ answer }}}} exactly once")
    before_answer = rendered.split(_ANSWER_MARK)[0]
    query = before_answer.rstrip()
    gap = before_answer[len(query):]
    if not query:
        raise HarnessError(f"template '{template.name}' renders nothing before the answer")
    demos = tuple(template.render(demo, template.verbalizers[demo.label]) + template.separator for demo in demonstrations)
    return Prompt(
        example_id=example.id,
        instruction=template.instruction + template.separator if template.instruction else "",
        demonstrations=demos,
        demo_ids=tuple(demo.id for demo in demonstrations),
        query=query,
        continuations=tuple(gap + template.verbalizers[label] for label in template.verbalizers),
    )


def build_channel_prompts(template: Template, demonstrations: Sequence[Example], example: Example) -> list[Prompt]:
    """Noisy-channel scoring (Min et al. 2022): per label, a prompt whose query ends just before the
    input, with that label's verbalizer in place; the scored continuation is the input onwards."""
    demos = tuple(template.render(demo, template.verbalizers[demo.label]) + template.separator for demo in demonstrations)
    marks = _field_marks(list(example.fields))
    prompts = []
    for label, verbalizer in template.verbalizers.items():
        marked = template.render(marks, verbalizer)
        positions = [marked.find(_field_mark(i)) for i in range(len(example.fields))]
        # the whitespace before the input goes with the scored input, as it goes with an answer
        head = marked[: min((p for p in positions if p >= 0), default=0)].rstrip()
        rendered = template.render(example, verbalizer).rstrip()
        if not head or not rendered.startswith(head) or len(rendered) == len(head):
            raise HarnessError(f"template '{template.name}' cannot be scored as a channel: "
                               "it must render label words, then the input")
        prompts.append(Prompt(
            example_id=f"{example.id}|{label}",
            instruction=template.instruction + template.separator if template.instruction else "",
            demonstrations=demos,
            demo_ids=tuple(demo.id for demo in demonstrations),
            query=head,
            continuations=(rendered[len(head):],),
        ))
    return prompts


def content_free_prompt(template: Template, demonstrations: Sequence[Example], fields: Sequence[str], text: str) -> Prompt:
    """The prompt with every input field set to a content-free string ("N/A", "", "[MASK]"; Zhao et al. 2021)."""
    example = Example(id=f"content-free:{text}", fields={name: text for name in fields}, label="")
    return build_prompt(template, demonstrations, example)


def domain_premise_prompt(template: Template, demonstrations: Sequence[Example], fields: Sequence[str]) -> Prompt:
    """The prompt with the query cut to its domain premise: the text between the last input field and
    the answer ("Sentiment:"), for domain-conditional PMI (Holtzman et al. 2021)."""
    marked = template.render(_field_marks(fields), _ANSWER_MARK).split(_ANSWER_MARK)[0]
    last_field_end = max(marked.rfind(_field_mark(i)) + len(_field_mark(i)) for i in range(len(fields)))
    premise = marked[last_field_end:].strip()
    if not premise:
        raise HarnessError(f"template '{template.name}' has no text between the input and the answer, "
                           "so domain-conditional PMI has no premise to condition on")
    return replace(content_free_prompt(template, demonstrations, fields, ""), example_id="domain-premise", query=premise)


def _field_mark(index: int) -> str:
    return f"\x01field{index}\x01"


def _field_marks(fields: Sequence[str]) -> Example:
    """A stand-in example whose field values mark where each field lands in the rendered text."""
    return Example(id="marks", fields={name: _field_mark(i) for i, name in enumerate(fields)}, label="")
