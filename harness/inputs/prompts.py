"""Examples -> prompts: Jinja few-shot templates rendered in a sandbox.

A template file (prompts/<task>/<name>.yaml) holds an optional instruction, the Jinja
source of one example with `{{ answer }}` where the label's verbalizer goes, the separator
between examples, and optionally its own verbalizers (answer_choices). A k-shot prompt is

    instruction + separator + demo_1 + separator + ... + demo_k + separator + query

where each demonstration is rendered with its gold verbalizer and the query is rendered up
to the answer. The whitespace just before the answer belongs to the scored continuation
(" positive" after "Sentiment:"), as in lm-evaluation-harness.

With a chat template (chat_template=true) the same parts become messages, by lm-evaluation-harness 0.4.13's rules
(its `fewshot_context` and `build_qa_turn`): the instruction, after the system instruction, is the system message;
each demonstration a user turn (its query) and an assistant turn (its answer), or all of them and the query one
user turn (fewshot_as_multiturn=false); the query the last user turn; gen_prefix an assistant turn the model
continues. The backend's tokenizer renders the messages (harness/engine/request.py), so the text depends on the
model as its tokens do. An option is scored right after the generation prompt, without the whitespace before
it (lm-evaluation-harness's multiple-choice target delimiter under a chat template), unless gen_prefix ends
without whitespace; a cloze target keeps its own (lm-evaluation-harness's loglikelihood requests).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import jinja2
from jinja2 import meta

from harness.config import TaskConfig
from harness.errors import HarnessError
from harness.inputs.data import Example
from harness.inputs.expressions import ENVIRONMENT
from harness.inputs.registry import template_files
from harness.inputs.safeyaml import load_yaml, read_bounded
from harness.kinds.base import task_kind

TEMPLATE_KEYS = {"description", "instruction", "example", "demonstration", "continuation", "separator", "answer_choices",
                 "label_words"}
_ANSWER_MARK = "\x00answer\x00"
# What a template's Jinja may raise on an item it does not fit (`sentence.index('_')` without a blank, ...)
_RENDER_ERRORS = (jinja2.TemplateError, ValueError, TypeError, IndexError, KeyError, AttributeError)


@dataclass(frozen=True)
class ChatSettings:
    """How prompts go through the model's chat template (chat_template=true or a template's name)."""

    template_name: str | None  # one of the tokenizer's named templates; None: its default
    multiturn: bool  # each demonstration a user turn and an assistant turn; else one user turn for all
    system_instruction: str | None  # the system message, before the task's instruction
    gen_prefix: str | None  # what the assistant turn starts with (continued, not a fresh generation prompt)
    keep_gap: bool  # the scored text keeps the whitespace before it (cloze: lm-evaluation-harness's loglikelihood)


@dataclass(frozen=True)
class Turn:
    """A demonstration as chat turns: `question` (the user's), `answer` (the assistant's), and what lies between
    them in plain text (lm-evaluation-harness's target delimiter)."""

    question: str
    delimiter: str
    answer: str


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    instruction: jinja2.Template | None  # before the demonstrations; may name the item's fields (MMLU's subject)
    example: jinja2.Template
    separator: str
    verbalizers: Mapping[str, str]  # classify: label name -> verbalizer, in the task's label order
    # partial scoring (Winogrande): the text after the answer, scored once per option placed in the context
    continuation: jinja2.Template | None = None
    # how a demonstration is shown, when not as `example` with its answer: lm-evaluation-harness puts its target
    # delimiter before a target that has its own leading space (LAMBADA's demonstrations: "...own,  Shane")
    demonstration_source: jinja2.Template | None = None
    file_sha256: str = ""  # of the template's YAML file: part of the run key
    label_word_sets: tuple[str, ...] = ()  # the names of its alternative verbalizer sets (label_words=NAME)
    chat: ChatSettings | None = None  # the run renders prompts through the model's chat template

    def render(self, example: Example, answer: str) -> str:
        return self._render(self.example, example, answer=answer)

    def render_instruction(self, example: Example) -> str:
        return "" if self.instruction is None else self._render(self.instruction, example)

    def render_continuation(self, example: Example) -> str:
        return "" if self.continuation is None else self._render(self.continuation, example)

    def answers(self, example: Example) -> tuple[str, ...]:
        """What goes at {{ answer }} for each option: the item's own choices, or the task's verbalizers."""
        return example.choices or tuple(self.verbalizers.values())

    def gold_answer(self, example: Example) -> str:
        return example.choices[example.gold] if example.choices else self.verbalizers[example.label]

    def demonstration(self, example: Example) -> str:
        """An example shown with its right answer (and, for partial scoring, what follows it)."""
        answer = self.gold_answer(example)
        if self.demonstration_source is not None:
            return self._render(self.demonstration_source, example, answer=answer) + self.separator
        return self.render(example, answer) + self.render_continuation(example) + self.separator

    def turn(self, example: Example) -> Turn:
        """The demonstration as a user turn and an assistant turn: the question is the text before the answer (the
        option in place, for partial scoring), the answer the rest (without the whitespace before it, unless
        chat.keep_gap); their plain-text join is the demonstration itself."""
        assert self.chat is not None
        shown = self.demonstration(example)[: -len(self.separator) or None]
        if self.continuation is not None:
            question = self.render(example, self.gold_answer(example)).rstrip()
            answer = shown[len(question):].lstrip()
        else:
            question, gap = _split_at_answer(self, example)
            rendered = self.render(example, self.gold_answer(example))
            answer = rendered[len(question) + (0 if self.chat.keep_gap else len(gap)):]
        if not shown.startswith(question) or not shown.endswith(answer) or len(question) + len(answer) > len(shown):
            raise HarnessError(f"template '{self.name}' cannot show example {example.id} as chat turns: its "
                               "demonstration is not its query followed by its answer")
        return Turn(question, shown[len(question) : len(shown) - len(answer)], answer)

    def _render(self, source: jinja2.Template, example: Example, **values: Any) -> str:
        try:
            return source.render(**example.fields, **values)
        except _RENDER_ERRORS as error:  # a sandbox violation, a bad filter, an item the template does not fit
            raise HarnessError(f"template '{self.name}' failed on example {example.id}: "
                               f"{type(error).__name__}: {error}") from None
        except HarnessError as error:  # a pattern of regex_replace that backtracks without end
            raise HarnessError(f"template '{self.name}' failed on example {example.id}: {error}") from None


@dataclass(frozen=True)
class Prompt:
    """One test example's prompt, kept in segments so demonstrations can be dropped to fit."""

    example_id: str
    instruction: str  # "" or instruction + separator
    demonstrations: tuple[str, ...]  # each rendered with its answer, then the separator
    demo_ids: tuple[str, ...]
    query: str  # the test input up to the answer, without the whitespace before it
    continuations: tuple[str, ...]  # per label: that whitespace + verbalizer (with a chat template: as it scores)
    chat: ChatSettings | None = None
    turns: tuple[Turn, ...] = ()  # with a chat template: each demonstration as turns
    separator: str = "\n\n"  # the template's, between demonstrations
    gap: str = " "  # the whitespace before the answer in the template (lm-evaluation-harness's target delimiter)

    def context(self, dropped_demos: int = 0) -> str:
        """The text before the answer, without the first `dropped_demos` demonstrations (plain prompts)."""
        return self.instruction + "".join(self.demonstrations[dropped_demos:]) + self.query

    def messages(self, dropped_demos: int = 0) -> list[dict[str, str]]:
        """The prompt as chat messages, without the first `dropped_demos` demonstrations, by lm-evaluation-harness
        0.4.13's rules (module docstring); the tokenizer's template renders them."""
        chat = self.chat
        assert chat is not None
        system = _delimited(chat.system_instruction, self.instruction, self.separator)
        gen_prefix = chat.gen_prefix
        # (role, content, what follows it in plain text), as lm-evaluation-harness's Message
        parts: list[tuple[str, str, str]] = []
        for turn in self.turns[dropped_demos:]:
            delimiter = turn.delimiter if not gen_prefix or _needs_delimiter(turn.question, gen_prefix) else ""
            parts.append(("user", turn.question, delimiter))
            parts.append(("assistant", _delimited(gen_prefix, turn.answer, " "), self.separator))
        parts.append(("user", self.query, self.gap if gen_prefix and _needs_delimiter(self.query, gen_prefix) else ""))
        if gen_prefix:
            parts.append(("assistant", gen_prefix, ""))
        if chat.multiturn:
            turns = [{"role": role, "content": content} for role, content, _ in parts]
        else:  # one user turn: everything before the final assistant turn (if any) joined as plain text
            final = parts.pop() if parts[-1][0] == "assistant" else None
            text = "".join(content + follows for _, content, follows in parts[:-1]) + parts[-1][1]
            turns = [{"role": "user", "content": text}]
            if final is not None:
                turns.append({"role": "assistant", "content": final[1]})
        return ([{"role": "system", "content": system}] if system else []) + turns


def load_template(task: TaskConfig, name: str, label_words: str | None = None) -> Template:
    """The template `name` of the task; label_words picks one of its alternative verbalizer sets (its
    `label_words` mapping: set name -> label -> word) in place of answer_choices."""
    files = template_files(task.name)
    if name not in files:
        known = ", ".join(files) or "none"
        raise HarnessError(f"unknown template '{name}' for task '{task.name}' (templates: {known})")
    path = files[name]
    raw = read_bounded(path, "template")
    spec = load_yaml(raw, f"template {path}")
    if not isinstance(spec, dict) or "example" not in spec:
        raise HarnessError(f"template {path} must be a mapping with an `example` key")
    unknown = set(spec) - TEMPLATE_KEYS
    if unknown:
        raise HarnessError(f"template {path} has unknown keys {sorted(unknown)} (allowed: {sorted(TEMPLATE_KEYS)})")
    sources = {key: str(spec[key]) for key in ("example", "instruction", "continuation", "demonstration")
               if spec.get(key)}
    used: dict[str, set[str]] = {}
    for key, source in sources.items():
        try:
            used[key] = meta.find_undeclared_variables(ENVIRONMENT.parse(source))
        except jinja2.TemplateSyntaxError as error:
            raise HarnessError(f"template {path} ({key}) line {error.lineno}: {error.message}") from None
    everything = set().union(*used.values())
    missing = sorted(everything - set(task.fields) - {"answer"})
    if missing:
        raise HarnessError(
            f"template '{name}' uses field(s) {missing} that task '{task.name}' does not have "
            f"(fields: {', '.join(task.fields)})"
        )
    if not task_kind(task.kind).template_answer:  # the rendered example is the text scored: there is no answer
        if "answer" in everything or set(sources) - {"example"}:
            raise HarnessError(f"template {path} is for a perplexity task: its `example` renders the text scored, "
                               "with no {{ answer }} (and no instruction, demonstration or continuation)")
    elif "answer" not in used["example"] or "answer" in used.get("instruction", set()) | used.get("continuation", set()):
        raise HarnessError(f"template {path} must place the label with {{{{ answer }}}} in its example")
    if not everything & set(task.fields):
        raise HarnessError(f"template {path} renders none of the fields of task '{task.name}' "
                           f"({', '.join(task.fields)}): every test example would get the same prompt")
    if "continuation" in sources and task.labels:
        raise HarnessError(f"template {path}: `continuation` (partial scoring) is for multiple-choice tasks")
    if ("answer_choices" in spec or "label_words" in spec) and not task.labels:
        raise HarnessError(f"template {path}: answer_choices and label_words are for classification tasks; a "
                           "multiple-choice task's items bring their own options (the task's `choices` column)")
    alternatives = spec.get("label_words") or {}
    if not isinstance(alternatives, dict):
        raise HarnessError(f"template {path}: label_words must map a name to a verbalizer set (label -> word)")
    for set_name, words in alternatives.items():  # every set is checked, whichever the run uses
        _verbalizers(task, words, f"{path.name} (label_words {set_name})")
    if label_words is not None and label_words not in alternatives:
        known = ", ".join(map(str, alternatives)) or "none"
        raise HarnessError(f"template '{name}' of task '{task.name}' has no label_words '{label_words}' "
                           f"(it has: {known})")
    return Template(
        name=name,
        description=str(spec.get("description", "")),
        instruction=ENVIRONMENT.from_string(sources["instruction"]) if "instruction" in sources else None,
        example=ENVIRONMENT.from_string(sources["example"]),
        separator=str(spec.get("separator", "\n\n")),
        verbalizers=_verbalizers(task, alternatives[label_words] if label_words is not None
                                 else spec.get("answer_choices"), path.name),
        continuation=ENVIRONMENT.from_string(sources["continuation"]) if "continuation" in sources else None,
        demonstration_source=ENVIRONMENT.from_string(sources["demonstration"]) if "demonstration" in sources else None,
        file_sha256=hashlib.sha256(raw).hexdigest(),
        label_word_sets=tuple(map(str, alternatives)),
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
    """One context, the answer options as continuations (with the whitespace before the answer)."""
    if template.continuation is not None:
        raise HarnessError(f"template '{template.name}' scores the text after the answer: use build_partial_prompts")
    query, gap = _split_at_answer(template, example)
    return Prompt(
        example_id=example.id,
        instruction=_instruction(template, example),
        demonstrations=tuple(template.demonstration(demo) for demo in demonstrations),
        demo_ids=tuple(demo.id for demo in demonstrations),
        query=query,
        continuations=tuple(_scored(template, gap, answer) for answer in template.answers(example)),
        gap=gap,
        **_chat_parts(template, demonstrations),
    )


def _chat_parts(template: Template, demonstrations: Sequence[Example]) -> dict[str, Any]:
    """A prompt's chat fields: none for a plain run."""
    if template.chat is None:
        return {}
    return {"chat": template.chat, "turns": tuple(template.turn(demo) for demo in demonstrations),
            "separator": template.separator}


def _scored(template: Template, gap: str, text: str) -> str:
    """The continuation scored: the whitespace before the answer, then the answer. Under a chat template the answer
    follows the generation prompt directly (lm-evaluation-harness 0.4.13's target delimiter is "" there), unless
    gen_prefix ends without whitespace, or the kind keeps it (cloze)."""
    chat = template.chat
    if chat is None or chat.keep_gap or (chat.gen_prefix and not chat.gen_prefix[-1].isspace()):
        return gap + text
    return text


def _delimited(prefix: str | None, suffix: str | None, delimiter: str) -> str:
    """prefix and suffix joined with `delimiter` unless there is whitespace where they meet (either may be empty)."""
    if not prefix or not suffix:
        return prefix or suffix or ""
    return prefix + suffix if prefix[-1].isspace() or suffix[0].isspace() else prefix + delimiter + suffix


def _needs_delimiter(prefix: str, suffix: str) -> bool:
    return bool(prefix) and not (prefix[-1].isspace() or suffix[0].isspace())


def build_partial_prompts(template: Template, demonstrations: Sequence[Example], example: Example) -> list[Prompt]:
    """Partial scoring (Trinh and Le 2018; lm-evaluation-harness's Winogrande): per option, a context that
    ends with the option in place, and the same continuation, the text after it, scored after each."""
    continuation = template.render_continuation(example)
    if not continuation.strip():
        raise HarnessError(f"template '{template.name}' renders an empty continuation for example {example.id}")
    demos = tuple(template.demonstration(demo) for demo in demonstrations)
    prompts = []
    for index, answer in enumerate(template.answers(example)):
        context = template.render(example, answer)
        gap = context[len(context.rstrip()):] + continuation[: len(continuation) - len(continuation.lstrip())]
        prompts.append(Prompt(
            example_id=f"{example.id}|{index}",
            instruction=_instruction(template, example),
            demonstrations=demos,
            demo_ids=tuple(demo.id for demo in demonstrations),
            query=context.rstrip(),  # whitespace at its end belongs to the scored text, as before an answer
            continuations=(_scored(template, gap, continuation.lstrip()),),
            gap=gap,
            **_chat_parts(template, demonstrations),
        ))
    return prompts


def gold_sequence(template: Template, example: Example) -> tuple[Prompt, int]:
    """The prompt of the right answer with no demonstrations, and which of its continuations is the right one: what
    fine-tuning learns (rendered as any prompt is, through the chat template where the run has one)."""
    if template.continuation is not None:
        return build_partial_prompts(template, [], example)[example.gold], 0
    prompt = build_prompt(template, [], example)
    return prompt, example.gold if example.choices else list(template.verbalizers).index(example.label)


def _split_at_answer(template: Template, example: Example) -> tuple[str, str]:
    """The rendered query up to the answer, and the whitespace right before the answer."""
    rendered = template.render(example, _ANSWER_MARK)
    if rendered.count(_ANSWER_MARK) != 1:
        raise HarnessError(f"template '{template.name}' must use {{{{ answer }}}} exactly once")
    before_answer = rendered.split(_ANSWER_MARK)[0]
    query = before_answer.rstrip()
    if not query:
        raise HarnessError(f"template '{template.name}' renders nothing before the answer")
    return query, before_answer[len(query):]


def _instruction(template: Template, example: Example) -> str:
    instruction = template.render_instruction(example)
    return instruction + template.separator if instruction else ""


def build_channel_prompts(template: Template, demonstrations: Sequence[Example], example: Example) -> list[Prompt]:
    """Noisy-channel scoring (Min et al. 2022): per label, a prompt whose query ends just before the
    input, with that label's verbalizer in place; the scored continuation is the input onwards."""
    demos = tuple(template.demonstration(demo) for demo in demonstrations)
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
            instruction=_instruction(template, example),
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
