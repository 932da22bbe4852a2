"""Templates render exactly, validate their fields and verbalizers, and stay in the sandbox."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from harness.errors import HarnessError
from harness.inputs.data import Example, load_split
from harness.inputs.prompts import build_prompt, load_template
from harness.inputs.registry import load_task_node, task_files


def _task(name: str):
    return OmegaConf.to_object(load_task_node(task_files()[name]))


def test_k_shot_prompt_renders_exactly(harness_env: dict) -> None:
    task = _task("toy")
    template = load_template(task, "instructed")
    demos = [Example("d1", {"text": "a delight"}, "pos"), Example("d2", {"text": "I hated it"}, "neg")]
    prompt = build_prompt(template, demos, Example("t1", {"text": "warm and funny"}, "pos"))
    assert prompt.context() == (
        "Is the review good or bad?\n\n"
        "Text: a delight\nLabel: good\n\n"
        "Text: I hated it\nLabel: bad\n\n"
        "Text: warm and funny\nLabel:"
    )
    assert prompt.continuations == (" bad", " good")
    assert prompt.demo_ids == ("d1", "d2")
    assert prompt.context(dropped_demos=1).startswith("Is the review good or bad?\n\nText: I hated it")


def test_zero_shot_prompt_and_template_verbalizers(harness_env: dict) -> None:
    task = _task("toy")
    prompt = build_prompt(load_template(task, "multi"), [], Example("t", {"text": "ok"}, "neg"))
    assert prompt.context() == "Text: ok\nLabel:"
    assert prompt.continuations == (" not at all wonderful", " truly wonderfully excellent")


def test_text_after_the_answer_stays_in_demonstrations_only() -> None:
    task = OmegaConf.to_object(load_task_node(task_files()["sentiment"]))
    template = load_template(task, "it_was")
    prompt = build_prompt(template, [Example("d", {"text": "Superb."}, "fresh")], Example("t", {"text": "Dull."}, "rotten"))
    assert prompt.context() == "Superb. It was great .\nDull. It was"
    assert prompt.continuations == (" terrible", " great")


def test_template_with_a_missing_field_is_rejected(harness_env: dict) -> None:
    with pytest.raises(HarnessError, match=r"uses field\(s\) \['title'\]"):
        load_template(_task("toy"), "missing_field")


def test_empty_verbalizer_is_rejected(harness_env: dict) -> None:
    with pytest.raises(HarnessError, match="empty verbalizer"):
        load_template(_task("toy"), "empty_verbalizer")


def test_unknown_template_lists_the_known_ones(harness_env: dict) -> None:
    with pytest.raises(HarnessError, match="unknown template 'nope'.*plain"):
        load_template(_task("toy"), "nope")


def test_templates_render_in_a_sandbox(harness_env: dict) -> None:
    template = load_template(_task("toy"), "unsafe")
    with pytest.raises(HarnessError, match="unsafe|access"):
        build_prompt(template, [], Example("t", {"text": "x"}, "neg"))


@pytest.mark.parametrize("task_name", ["sentiment", "sst2", "agnews", "trec"])
def test_every_builtin_template_loads(task_name: str) -> None:
    task = _task(task_name)
    from harness.inputs.registry import template_files

    names = list(template_files(task_name))
    assert task.default_template in names and len(names) >= 2
    for name in names:
        template = load_template(task, name)
        example = Example("x", {field: "some text" for field in task.fields}, next(iter(task.labels)))
        prompt = build_prompt(template, [example], example)
        assert len(prompt.continuations) == len(task.labels)
        assert prompt.query and all(c.strip() for c in prompt.continuations)


def test_toy_data_loads_with_label_mapping(harness_env: dict) -> None:
    examples = load_split(_task("toy"), "test")
    assert [e.id for e in examples] == ["te0", "te1", "te2", "te3"]
    assert [e.label for e in examples] == ["pos", "pos", "neg", "neg"]


def test_label_words_pick_an_alternative_verbalizer_set(harness_env: dict, tmp_path, monkeypatch) -> None:
    import os

    prompts = tmp_path / "prompts" / "toy"
    prompts.mkdir(parents=True)
    (prompts / "worded.yaml").write_text(
        'example: "Text: {{ text }}\\nLabel: {{ answer }}"\nanswer_choices: {neg: bad, pos: good}\n'
        "label_words:\n  awful_great: {neg: awful, pos: great}\n  broken: {neg: awful}\n"
    )
    monkeypatch.setenv("HARNESS_PATH", f"{tmp_path}{os.pathsep}{os.environ['HARNESS_PATH']}")
    task = _task("toy")
    with pytest.raises(HarnessError, match=r"label_words broken\): answer_choices must give a verbalizer for each"):
        load_template(task, "worded")  # every set is checked, whichever the run picks
    (prompts / "worded.yaml").write_text(
        'example: "Text: {{ text }}\\nLabel: {{ answer }}"\nanswer_choices: {neg: bad, pos: good}\n'
        "label_words:\n  awful_great: {neg: awful, pos: great}\n"
    )
    example = Example("t", {"text": "ok"}, "neg")
    assert build_prompt(load_template(task, "worded"), [], example).continuations == (" bad", " good")
    chosen = load_template(task, "worded", "awful_great")
    assert build_prompt(chosen, [], example).continuations == (" awful", " great")
    assert chosen.label_word_sets == ("awful_great",)
    with pytest.raises(HarnessError, match="has no label_words 'nice' \\(it has: awful_great\\)"):
        load_template(task, "worded", "nice")
    with pytest.raises(HarnessError, match="has no label_words 'nice' \\(it has: none\\)"):
        load_template(task, "plain", "nice")


def test_train_seed_is_for_fine_tuning_only() -> None:
    from harness.runs.plan import check_settings
    from helpers import compose

    with pytest.raises(HarnessError, match="train_seed applies to fine-tuning methods"):
        check_settings(compose("train_seed=2"))
    check_settings(compose("method=lora", "shots=4", "train_seed=2"))
