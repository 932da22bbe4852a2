"""chat_template=true: prompts as chat messages by lm-evaluation-harness 0.4.13's rules, rendered by the model's own
chat template (a tiny ChatML template given to the tiny GPT-2 here), scored exactly by the shared-prefix engine,
fine-tuned in the same format, and every setting that cannot apply refused in one line before the model loads."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.inputs.data import load_split
from harness.inputs.prompts import ChatSettings, Turn, build_partial_prompts, build_prompt, load_template
from helpers import compose, report, run_cli, run_in_process, write_documents_task, write_short_answer_task

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
# a template that refuses a system message, as some models' do (lm-evaluation-harness then drops it)
NO_SYSTEM = ("{% for message in messages %}{% if message['role'] == 'system' %}{{ raise_exception('no system role') }}"
             "{% endif %}{{ message['role'] + ': ' + message['content'] + '\\n' }}{% endfor %}"
             "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")


def _with_template(source: Path, target: Path, template: str) -> Path:
    shutil.copytree(source, target)
    (target / "chat_template.jinja").write_text(template)
    return target


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    return _with_template(tiny_model_dir, tmp_path_factory.mktemp("chat") / "tiny-chat", CHATML)


def _settings(**overrides) -> ChatSettings:
    return replace(ChatSettings(template_name=None, multiturn=True, system_instruction=None, gen_prefix=None,
                                keep_gap=False), **overrides)


def _toy(harness_env: dict, template: str = "instructed", **chat):
    task = compose("task=toy").task
    examples = load_split(task, "test")
    demos = load_split(task, "train")[:2]
    return replace(load_template(task, template), chat=_settings(**chat)), demos, examples[0]


def test_demonstrations_become_turns_and_options_follow_the_generation_prompt(harness_env: dict) -> None:
    template, demos, example = _toy(harness_env, system_instruction="Be brief.")
    prompt = build_prompt(template, demos, example)
    assert prompt.messages() == [
        {"role": "system", "content": "Be brief.\n\nIs the review good or bad?\n\n"},
        {"role": "user", "content": f"Text: {demos[0].fields['text']}\nLabel:"},
        {"role": "assistant", "content": "good"},
        {"role": "user", "content": f"Text: {demos[1].fields['text']}\nLabel:"},
        {"role": "assistant", "content": "good"},
        {"role": "user", "content": f"Text: {example.fields['text']}\nLabel:"},
    ]
    assert prompt.continuations == ("bad", "good")  # lm-evaluation-harness: no target delimiter after the prompt
    assert prompt.messages(dropped_demos=1)[1]["content"] == f"Text: {demos[1].fields['text']}\nLabel:"


def test_one_user_turn_and_gen_prefix(harness_env: dict) -> None:
    template, demos, example = _toy(harness_env, template="plain", multiturn=False, gen_prefix="Answer:")
    prompt = build_prompt(template, demos, example)
    plain = [f"Text: {demo.fields['text']}\nLabel: Answer: good\n\n" for demo in demos]
    # the last user part loses its delimiter in one turn (lm-evaluation-harness's multiturn_to_singleturn)
    assert prompt.messages() == [{"role": "user", "content": "".join(plain) + f"Text: {example.fields['text']}\nLabel:"},
                                 {"role": "assistant", "content": "Answer:"}]
    assert prompt.continuations == (" bad", " good")  # gen_prefix without trailing whitespace keeps the delimiter
    template, demos, example = _toy(harness_env, template="plain", multiturn=False)
    prompt = build_prompt(template, demos, example)
    assert prompt.messages() == [{"role": "user", "content": prompt.context()}]  # the plain prompt, one turn


def test_partial_scoring_turns(mc_task_root: Path, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_PATH", str(mc_task_root))
    task = compose("task=toymc").task
    template = replace(load_template(task, "blank"), chat=_settings())
    items = [item for item in load_split(task, "test") if "_" in item.fields["question"]]
    demo = items[0]
    prompt = build_partial_prompts(template, [demo], items[1])[0]
    before, after = demo.fields["question"].split("_")
    # the user turn ends with the right option in the blank, the assistant turn is the rest of the sentence
    assert prompt.turns[0] == Turn(before + demo.choices[demo.gold], " ", after.strip())
    assert prompt.continuations == (items[1].fields["question"].split("_")[1].strip(),)  # no delimiter: chat


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def test_chat_prompts_score_exactly_and_share_their_prefix(tmp_path: Path, harness_env: dict, chat_model_dir: Path,
                                                          capsys) -> None:
    base = ["task=toy", f"model={chat_model_dir}", "chat_template=true", "template=instructed",
            "system_instruction=Be brief."]
    shared = run_in_process(*base, "shots=4", f"output_dir={tmp_path / 'shared'}")
    alone = run_in_process(*base, "shots=4", "prefix_cache=false", "batch_size=1", f"output_dir={tmp_path / 'alone'}")
    for mine, theirs in zip(_rows(shared.run_dir), _rows(alone.run_dir), strict=True):
        assert mine["prediction"] == theirs["prediction"]
        for label, score in mine["scores"].items():
            assert score == pytest.approx(theirs["scores"][label], abs=1e-5)
    # the system message and the demonstration turns run once, not once per item
    assert shared.record.cost.tokens_forwarded < 0.6 * alone.record.cost.tokens_forwarded
    plain = run_in_process("task=toy", f"model={chat_model_dir}", "shots=4", "template=instructed",
                           f"output_dir={tmp_path / 'shared'}")
    assert plain.run_dir != shared.run_dir  # the format is part of the run
    config = (shared.run_dir / "config.yaml").read_text()
    assert "chat_template: true" in config and "fewshot_as_multiturn: true" in config
    code, _, err = report(capsys, tmp_path / "shared")  # both formats side by side, told apart by the setting
    board = (tmp_path / "shared" / "report" / "leaderboard.csv").read_text()
    assert code == 0 and "chat_template" in board
    assert "note: 1 run of tiny-chat rendered plain prompts though its tokenizer has a chat template" in err
    exported = run_in_process(*base, "shots=4", "lmeval_results=true", f"output_dir={tmp_path / 'exported'}")
    [results] = (exported.run_dir / "lm-eval").glob("results_*.json")
    written = json.loads(results.read_text())
    assert written["chat_template"] == "default" and written["fewshot_as_multiturn"] is True
    assert written["system_instruction"] == "Be brief."


def test_generation_after_the_generation_prompt(tmp_path: Path, chat_model_dir: Path, monkeypatch) -> None:
    rows = [("Paris is the capital of France", ["Paris"]), ("blue is the sky", ["blue"]), ("who wrote it", ["Kafka"])]
    root = write_short_answer_task(tmp_path, "toyqa", rows, "metrics: [exact_match]\nanswer: {until: [\" the\"], max_new_tokens: 6}\n")
    monkeypatch.setenv("HARNESS_PATH", str(root))
    result = run_in_process("task=toyqa", "shots=1", "demos=first_n", f"model={chat_model_dir}", "chat_template=true",
                            f"output_dir={tmp_path / 'out'}")
    assert all(" the" not in row["generation"] for row in _rows(result.run_dir))


def test_fine_tuning_learns_in_the_chat_format(tmp_path: Path, harness_env: dict, chat_model_dir: Path) -> None:
    from harness.engine.hf.loading import load_backend
    from harness.engine.request import scored_texts
    from harness.inputs.prompts import gold_sequence

    template, _, example = _toy(harness_env)
    lm = load_backend(compose(f"model={chat_model_dir}").model, "cpu")
    prompt, index = gold_sequence(template, example)
    context, continuations = scored_texts(prompt, lm)
    # the generation prompt's newline is scored with the answer, as lm-evaluation-harness scores it
    assert context.endswith("<|im_start|>assistant") and continuations[index] == "\ngood"
    result = run_in_process("task=toy", f"model={chat_model_dir}", "chat_template=true", "method=lora", "shots=4",
                            "method.steps=2", "method.learning_rate=0.01", f"output_dir={tmp_path}")
    assert result.record.training is not None


def test_a_template_without_a_system_role_gets_the_messages_without_it(tmp_path: Path, harness_env: dict,
                                                                      tiny_model_dir: Path) -> None:
    model = _with_template(tiny_model_dir, tmp_path / "no-system", NO_SYSTEM)
    result = run_in_process("task=toy", f"model={model}", "chat_template=true", "template=instructed", "shots=1",
                            "system_instruction=Be brief.", f"output_dir={tmp_path / 'out'}")
    assert result.record.metrics


def test_what_cannot_apply_is_one_line_at_planning(tmp_path: Path, harness_env: dict, tiny_model_dir: Path,
                                                    chat_model_dir: Path) -> None:
    out = f"output_dir={tmp_path}"
    cases = [
        ((f"model={tiny_model_dir}", "chat_template=true"), "has no chat template .* drop chat_template"),
        ((f"model={chat_model_dir}", "chat_template=tool_use"), "has no chat template named 'tool_use' .*default"),
        ((f"model={chat_model_dir}", "fewshot_as_multiturn=true"), "fewshot_as_multiturn=true needs chat_template"),
        ((f"model={chat_model_dir}", "system_instruction=Hi"), "system_instruction is a chat setting"),
        ((f"model={chat_model_dir}", "chat_template=true", "scorer=channel", "template=channel"),
         "scorer=channel .* no chat form"),
    ]
    for settings, message in cases:
        with pytest.raises(HarnessError, match=message):
            run_in_process("task=toy", *settings, out)


def test_the_prompt_format_is_a_factor_of_a_study(tmp_path: Path, harness_env: dict, chat_model_dir: Path) -> None:
    output = tmp_path / "results"
    done = run_cli("sensitivity", "task=toy", f"model={chat_model_dir}", "shots=2", "sets=2", "vary=set,chat_template",
                   f"output_dir={output}", env=harness_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list(output.glob("*/metrics.json"))) == 4  # 2 sets x plain and chat
    assert "the prompt format (plain or the chat template)" in done.stdout
    refused = run_cli("sensitivity", "task=toy", f"model={chat_model_dir}", "shots=2", "vary=chat_template",
                      "system_instruction=Hi", f"output_dir={output}", env=harness_env, cwd=tmp_path)
    assert refused.returncode != 0 and "system_instruction has no plain form" in refused.stderr


def test_perplexity_has_no_chat_form(tmp_path: Path, chat_model_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_PATH", str(write_documents_task(tmp_path)))
    with pytest.raises(HarnessError, match="rolling log-likelihood over a text has no chat form"):
        run_in_process("task=docs", f"model={chat_model_dir}", "chat_template=true", f"output_dir={tmp_path}")


def test_planning_reads_the_templates_from_the_files_alone(tmp_path: Path, harness_env: dict, chat_model_dir: Path,
                                                          tiny_model_dir: Path) -> None:
    from harness.config import ModelConfig
    from harness.engine.hf.fingerprint import chat_templates_at_planning

    assert chat_templates_at_planning(ModelConfig(name="chat", path=str(chat_model_dir))) == ["default"]
    assert chat_templates_at_planning(ModelConfig(name="plain", path=str(tiny_model_dir))) == []
    named = _with_template(tiny_model_dir, tmp_path / "named", CHATML)
    (named / "additional_chat_templates").mkdir()
    (named / "additional_chat_templates" / "tool_use.jinja").write_text(CHATML)
    assert chat_templates_at_planning(ModelConfig(name="named", path=str(named))) == ["default", "tool_use"]
    (named / "additional_chat_templates" / "tool_use.jinja").write_text(NO_SYSTEM)  # a named one renders its own way
    runs = [run_in_process("task=toy", f"model={named}", f"chat_template={name}", "shots=1",
                           f"output_dir={tmp_path / name}") for name in ("true", "tool_use")]
    assert _rows(runs[0].run_dir)[0]["scores"] != _rows(runs[1].run_dir)[0]["scores"]
    # a name only a server knows is not a hub id: the loaded tokenizer is checked instead
    assert chat_templates_at_planning(ModelConfig(name="served", path="served model:latest")) is None
