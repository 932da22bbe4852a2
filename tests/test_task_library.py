"""The built-in task library: every task composes, reads its data, and every template renders exactly.

Each built-in template is rendered as a 1-shot prompt (one demonstration, one query) on hand-written
examples and compared with the exact expected text, so a new template without an entry here fails.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.config import TaskConfig
from harness.inputs.data import Example, load_split
from harness.inputs.prompts import Template, build_channel_prompts, build_prompt, is_channel, load_template
from harness.inputs.registry import BUILTIN_ROOT, load_task_node
from helpers import SHARED

SHARED_DATA = SHARED / "data"
# the classification tasks (multiple-choice ones: tests/test_multiple_choice.py)
BUILTIN_TASKS = sorted(path.stem for path in (BUILTIN_ROOT / "tasks").glob("*.yaml")
                       if load_task_node(path).kind == "classify")
CHANNEL_TASKS = {"sentiment", "sst2", "sst5", "mr", "cr", "subj", "agnews", "dbpedia", "trec"}

SENTENCE, OTHER_SENTENCE = "a gripping , funny film .", "dull and far too long ."
# task -> (demonstration fields, its label, query fields, its label)
EXAMPLES = {
    "sentiment": ({"text": "A gripping, funny film."}, "fresh", {"text": "Dull and far too long."}, "rotten"),
    "sst2": ({"sentence": SENTENCE}, "positive", {"sentence": OTHER_SENTENCE}, "negative"),
    "sst5": ({"sentence": SENTENCE}, "very_positive", {"sentence": OTHER_SENTENCE}, "negative"),
    "mr": ({"sentence": SENTENCE}, "positive", {"sentence": OTHER_SENTENCE}, "negative"),
    "cr": ({"sentence": "the battery lasts all day ."}, "positive",
           {"sentence": "the screen cracked in a week ."}, "negative"),
    "subj": ({"sentence": "a detective returns to paris in 1925 ."}, "objective", {"sentence": SENTENCE}, "subjective"),
    "agnews": ({"text": "Stocks rally as oil prices fall."}, "business", {"text": "United win the cup final."}, "sports"),
    "dbpedia": ({"text": "Acme Corp is a maker of anvils."}, "company",
                {"text": "The Test is a river in England."}, "nature"),
    "trec": ({"text": "How far is it from Denver to Aspen ?"}, "number", {"text": "Who wrote Hamlet ?"}, "human"),
    "rte": ({"premise": "A cat sat on the mat.", "hypothesis": "A cat was on the mat."}, "entailment",
            {"premise": "The shop closed in 1990.", "hypothesis": "The shop is open today."}, "not_entailment"),
    "cb": ({"premise": "She said that the train had left.", "hypothesis": "the train had left"}, "entailment",
           {"premise": "I doubt that he will come.", "hypothesis": "he will come"}, "contradiction"),
    "boolq": ({"passage": "Paris is the capital of France.", "question": "is paris the capital of france"}, "yes",
              {"passage": "The Nile flows north.", "question": "does the nile flow south"}, "no"),
}

NEG_POS = (" negative", " positive")
TERRIBLE_GREAT = (" terrible", " great")
SST5_WORDS = (" terrible", " bad", " okay", " good", " great")
AGNEWS_WORDS = (" World", " Sports", " Business", " Technology")
DBPEDIA_WORDS = (" Company", " School", " Artist", " Athlete", " Politician", " Transportation", " Building",
                 " Nature", " Village", " Animal", " Plant", " Album", " Film", " Book")
TREC_ZHAO = (" Abbreviation", " Entity", " Description", " Person", " Location", " Number")
SENTIMENT_QUESTION = "\nQuestion: Is this sentence positive or negative?\nAnswer:"

# (task, template) -> (prompt.context(), prompt.continuations) of the 1-shot prompt
EXPECTED = {
    # sentiment (Rotten Tomatoes critic snippets)
    ("sentiment", "review"): (
        "Review: A gripping, funny film.\nSentiment: positive\n\nReview: Dull and far too long.\nSentiment:", NEG_POS),
    ("sentiment", "question"): (
        f"A gripping, funny film.{SENTIMENT_QUESTION} positive\n\nDull and far too long.{SENTIMENT_QUESTION}", NEG_POS),
    ("sentiment", "it_was"): ("A gripping, funny film. It was great .\nDull and far too long. It was", TERRIBLE_GREAT),
    ("sentiment", "channel_it_was"): ("It was great . A gripping, funny film.\nIt was", TERRIBLE_GREAT),
    # sst2
    ("sst2", "review"): (
        f"Review: {SENTENCE}\nSentiment: positive\n\nReview: {OTHER_SENTENCE}\nSentiment:", NEG_POS),
    ("sst2", "review_zhao"): (
        f"Review: {SENTENCE}\nSentiment: Positive\n\nReview: {OTHER_SENTENCE}\nSentiment:", (" Negative", " Positive")),
    ("sst2", "lmeval"): (f"{SENTENCE}{SENTIMENT_QUESTION} positive\n\n{OTHER_SENTENCE}{SENTIMENT_QUESTION}", NEG_POS),
    ("sst2", "it_was"): (f"{SENTENCE} It was great .\n{OTHER_SENTENCE} It was", TERRIBLE_GREAT),
    ("sst2", "channel_it_was"): (f"It was great . {SENTENCE}\nIt was", TERRIBLE_GREAT),
    # sst5
    ("sst5", "review"): (f"Review: {SENTENCE}\nSentiment: great\n\nReview: {OTHER_SENTENCE}\nSentiment:", SST5_WORDS),
    ("sst5", "it_was"): (f"{SENTENCE} It was great .\n{OTHER_SENTENCE} It was", SST5_WORDS),
    ("sst5", "a_one"): (f"{SENTENCE} A great one .\n{OTHER_SENTENCE} A", SST5_WORDS),
    ("sst5", "channel_it_was"): (f"It was great . {SENTENCE}\nIt was", SST5_WORDS),
    # mr
    ("mr", "review"): (f"Review: {SENTENCE}\nSentiment: positive\n\nReview: {OTHER_SENTENCE}\nSentiment:", NEG_POS),
    ("mr", "lmeval"): (f"{SENTENCE}{SENTIMENT_QUESTION} positive\n\n{OTHER_SENTENCE}{SENTIMENT_QUESTION}", NEG_POS),
    ("mr", "it_was"): (f"{SENTENCE} It was great .\n{OTHER_SENTENCE} It was", TERRIBLE_GREAT),
    ("mr", "channel_it_was"): (f"It was great . {SENTENCE}\nIt was", TERRIBLE_GREAT),
    # cr
    ("cr", "review"): (
        "Review: the battery lasts all day .\nSentiment: positive\n\nReview: the screen cracked in a week .\nSentiment:",
        NEG_POS),
    ("cr", "lmeval"): (
        f"the battery lasts all day .{SENTIMENT_QUESTION} positive\n\nthe screen cracked in a week .{SENTIMENT_QUESTION}",
        NEG_POS),
    ("cr", "it_was"): ("the battery lasts all day . It was great .\nthe screen cracked in a week . It was", TERRIBLE_GREAT),
    ("cr", "channel_it_was"): ("It was great . the battery lasts all day .\nIt was", TERRIBLE_GREAT),
    # subj
    ("subj", "input_type"): (
        f"Input: a detective returns to paris in 1925 .\nType: objective\n\nInput: {SENTENCE}\nType:",
        (" subjective", " objective")),
    ("subj", "this_is"): (
        f"a detective returns to paris in 1925 . This is objective .\n{SENTENCE} This is", (" subjective", " objective")),
    ("subj", "lmeval"): (
        ("a detective returns to paris in 1925 .\nQuestion: Is this sentence subjective or objective?\nAnswer: objective"
         f"\n\n{SENTENCE}\nQuestion: Is this sentence subjective or objective?\nAnswer:"), (" subjective", " objective")),
    ("subj", "channel_this_is"): (
        "This is objective . a detective returns to paris in 1925 .\nThis is", (" subjective", " objective")),
    # agnews
    ("agnews", "article"): (
        ("Classify the news articles into the categories of World, Sports, Business, and Technology.\n\n"
         "Article: Stocks rally as oil prices fall.\nAnswer: Business\n\nArticle: United win the cup final.\nAnswer:"),
        AGNEWS_WORDS),
    ("agnews", "input_type"): (
        "input: Stocks rally as oil prices fall.\ntype: business\n\ninput: United win the cup final.\ntype:",
        (" world", " sports", " business", " technology")),
    ("agnews", "topic"): (
        "Stocks rally as oil prices fall. Topic: Business.\nUnited win the cup final. Topic:", AGNEWS_WORDS),
    ("agnews", "channel_topic"): ("Topic: Business. Stocks rally as oil prices fall.\nTopic:", AGNEWS_WORDS),
    # dbpedia
    ("dbpedia", "article"): (
        ("Classify the documents based on whether they are about a Company, School, Artist, Athlete, Politician, "
         "Transportation, Building, Nature, Village, Animal, Plant, Album, Film, or Book.\n\n"
         "Article: Acme Corp is a maker of anvils.\nAnswer: Company\n\nArticle: The Test is a river in England.\nAnswer:"),
        DBPEDIA_WORDS),
    ("dbpedia", "input_type"): (
        "input: Acme Corp is a maker of anvils.\ntype: company\n\ninput: The Test is a river in England.\ntype:",
        (" company", " school", " artist", " athlete", " politics", " transportation", " building", " nature",
         " village", " animal", " plant", " album", " film", " book")),
    ("dbpedia", "topic"): (
        "Acme Corp is a maker of anvils. Topic: Company.\nThe Test is a river in England. Topic:", DBPEDIA_WORDS),
    ("dbpedia", "channel_topic"): (
        "Topic: Company. Acme Corp is a maker of anvils.\nTopic:",
        (" Company", " Educational Institution", " Artist", " Athlete", " Office Holder", " Mean of Transportation",
         " Building", " Natural Place", " Village", " Animal", " Plant", " Album", " Film", " Written Work")),
    # trec
    ("trec", "answer_type"): (
        ("Question: How far is it from Denver to Aspen ?\nAnswer Type: Number\n\nQuestion: Who wrote Hamlet ?\n"
         "Answer Type:"), TREC_ZHAO),
    ("trec", "answer_type_instructed"): (
        ("Classify the questions based on whether their answer type is a Number, Location, Person, Description, "
         "Entity, or Abbreviation.\n\nQuestion: How far is it from Denver to Aspen ?\nAnswer Type: Number\n\n"
         "Question: Who wrote Hamlet ?\nAnswer Type:"), TREC_ZHAO),
    ("trec", "type"): (
        "Question: How far is it from Denver to Aspen ?\nType: number\n\nQuestion: Who wrote Hamlet ?\nType:",
        (" expression", " entity", " description", " human", " location", " number")),
    ("trec", "channel_answer"): (
        "Answer: Number . How far is it from Denver to Aspen ?\nAnswer:",
        (" Expression", " Entity", " Description", " Human", " Location", " Number")),
    # rte
    ("rte", "lmeval"): (
        ("A cat sat on the mat.\nQuestion: A cat was on the mat. True or False?\nAnswer: True\n\n"
         "The shop closed in 1990.\nQuestion: The shop is open today. True or False?\nAnswer:"), (" True", " False")),
    ("rte", "zhao"): (
        ("A cat sat on the mat.\nquestion: A cat was on the mat. True or False?\nanswer: True\n\n"
         "The shop closed in 1990.\nquestion: The shop is open today. True or False?\nanswer:"), (" True", " False")),
    ("rte", "lu"): (
        ("premise: A cat sat on the mat.\nhypothesis: A cat was on the mat.\nprediction: True\n\n"
         "premise: The shop closed in 1990.\nhypothesis: The shop is open today.\nprediction:"), (" True", " False")),
    # cb
    ("cb", "lmeval"): (
        ("She said that the train had left.\nQuestion: the train had left. True, False, or Neither?\nAnswer: True\n\n"
         "I doubt that he will come.\nQuestion: he will come. True, False, or Neither?\nAnswer:"),
        (" True", " False", " Neither")),
    ("cb", "zhao"): (
        ("She said that the train had left.\nquestion: the train had left. true, false, or neither?\nanswer: true\n\n"
         "I doubt that he will come.\nquestion: he will come. true, false, or neither?\nanswer:"),
        (" true", " false", " neither")),
    ("cb", "lu"): (
        ("premise: She said that the train had left.\nhypothesis: the train had left\nprediction: true\n\n"
         "premise: I doubt that he will come.\nhypothesis: he will come\nprediction:"), (" true", " false", " neither")),
    # boolq
    ("boolq", "lmeval"): (
        ("Paris is the capital of France.\nQuestion: is paris the capital of france?\nAnswer: yes\n\n"
         "The Nile flows north.\nQuestion: does the nile flow south?\nAnswer:"), (" no", " yes")),
    ("boolq", "gpt3"): (
        ("Paris is the capital of France.\nquestion: is paris the capital of france\nanswer: True\n\n"
         "The Nile flows north.\nquestion: does the nile flow south\nanswer:"), (" False", " True")),
    ("boolq", "based_on_passage"): (
        ("Paris is the capital of France.\nBased on the previous passage, is paris the capital of france? Yes\n\n"
         "The Nile flows north.\nBased on the previous passage, does the nile flow south?"), (" No", " Yes")),
}

# channel templates: the query rendered with its gold label, as a channel scorer sees it (label first, input last)
CHANNEL_QUERY = {
    ("sentiment", "channel_it_was"): "It was terrible . Dull and far too long.",
    ("sst2", "channel_it_was"): f"It was terrible . {OTHER_SENTENCE}",
    ("sst5", "channel_it_was"): f"It was bad . {OTHER_SENTENCE}",
    ("mr", "channel_it_was"): f"It was terrible . {OTHER_SENTENCE}",
    ("cr", "channel_it_was"): "It was terrible . the screen cracked in a week .",
    ("subj", "channel_this_is"): f"This is subjective . {SENTENCE}",
    ("agnews", "channel_topic"): "Topic: Sports. United win the cup final.",
    ("dbpedia", "channel_topic"): "Topic: Natural Place. The Test is a river in England.",
    ("trec", "channel_answer"): "Answer: Human . Who wrote Hamlet ?",
}


@pytest.fixture(autouse=True)
def builtin_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_PATH", raising=False)


def _task(name: str, **overrides: object) -> TaskConfig:
    node = load_task_node(BUILTIN_ROOT / "tasks" / f"{name}.yaml")
    for key, value in overrides.items():
        OmegaConf.update(node, key, value, merge=False)
    return OmegaConf.to_object(node)


def _templates(task: str) -> list[str]:
    return sorted(path.stem for path in (BUILTIN_ROOT / "prompts" / task).glob("*.yaml"))


def _is_channel(name: str) -> bool:
    return name.startswith("channel_")


def _answer_position(template: Template, task: TaskConfig) -> tuple[int, list[int]]:
    """Where the answer and each field land in the rendered example (fields rendered as unique markers)."""
    example = Example("x", {field: f"<<{field}>>" for field in task.fields}, next(iter(task.labels)))
    rendered = template.render(example, "<<ANSWER>>")
    return rendered.index("<<ANSWER>>"), [rendered.index(f"<<{field}>>") for field in task.fields]


def test_every_builtin_template_has_an_expected_rendering() -> None:
    found = {(task, name) for task in BUILTIN_TASKS for name in _templates(task)}
    assert found == set(EXPECTED), "add the exact 1-shot rendering of new templates to EXPECTED"
    assert set(EXAMPLES) == set(BUILTIN_TASKS)
    assert {key for key in EXPECTED if _is_channel(key[1])} == set(CHANNEL_QUERY)


@pytest.mark.parametrize("task_name,template_name", sorted(EXPECTED))
def test_one_shot_prompt_renders_exactly(task_name: str, template_name: str) -> None:
    task = _task(task_name)
    template = load_template(task, template_name)
    demo_fields, demo_label, query_fields, query_label = EXAMPLES[task_name]
    prompt = build_prompt(template, [Example("d", demo_fields, demo_label)], Example("q", query_fields, query_label))
    context, continuations = EXPECTED[task_name, template_name]
    assert prompt.context() == context
    assert prompt.continuations == continuations
    if _is_channel(template_name):
        query = Example("q", query_fields, query_label)
        assert template.render(query, template.verbalizers[query_label]) == CHANNEL_QUERY[task_name, template_name]


@pytest.mark.parametrize("task_name", BUILTIN_TASKS)
def test_task_composes_and_names_its_sources(task_name: str) -> None:
    from hydra import compose, initialize_config_dir

    from harness.cli.configs import register_configs
    from harness.cli.run import CONFIG_DIR

    task = _task(task_name)
    assert task.name == task_name and task.description and len(task.labels) >= 2
    assert task.default_template in _templates(task_name) and not _is_channel(task.default_template)
    if task_name == "sentiment":
        assert task.corpus and task.hub is None and task.files is None
    else:
        for source in (task.hub, task.files):
            assert {task.demo_split, task.eval_split} <= set(source.splits)
            assert set(map(str, source.label_values.values())) == set(task.labels)
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        config = compose(config_name="config", overrides=[f"task={task_name}"])
    assert config.task.name == task_name and list(config.task.labels) == list(task.labels)


@pytest.mark.parametrize("task_name", BUILTIN_TASKS)
def test_direct_and_channel_templates(task_name: str) -> None:
    task = _task(task_name)
    names = _templates(task_name)
    direct = [name for name in names if not _is_channel(name)]
    channel = [name for name in names if _is_channel(name)]
    assert len(direct) >= 3
    assert len(channel) == (1 if task_name in CHANNEL_TASKS else 0)
    for name in names:
        template = load_template(task, name)
        assert template.description, f"{name} must say where it comes from"
        assert list(template.verbalizers) == list(task.labels)  # answer_choices cover every label, in label order
        answer_at, fields_at = _answer_position(template, task)
        if _is_channel(name):
            assert any(position > answer_at for position in fields_at), f"{name}: the input must follow the label"
        else:
            assert all(position < answer_at for position in fields_at), f"{name}: the answer must come last"
            words = list(template.verbalizers.values())
            assert all(len(word.split()) == 1 for word in words) and len(set(words)) == len(words)


SHARED_COUNTS = [
    ("sst2", "train", {"negative": 32, "positive": 32}),
    ("sst2", "validation", {"negative": 428, "positive": 444}),
    ("sst5", "train", {"very_negative": 1092, "negative": 2218, "neutral": 1624, "positive": 2322,
                       "very_positive": 1288}),
    ("sst5", "validation", {"very_negative": 139, "negative": 289, "neutral": 229, "positive": 279,
                            "very_positive": 165}),
    ("sst5", "test", {"very_negative": 279, "negative": 633, "neutral": 389, "positive": 510, "very_positive": 399}),
    ("agnews", "train", {"world": 21, "sports": 15, "business": 15, "technology": 13}),
    ("agnews", "test", {"world": 1900, "sports": 1900, "business": 1900, "technology": 1900}),
    ("trec", "train", {"abbreviation": 86, "description": 1162, "entity": 1250, "human": 1223, "location": 835,
                       "number": 896}),
    ("trec", "test", {"abbreviation": 9, "description": 138, "entity": 94, "human": 65, "location": 81,
                      "number": 113}),
    ("rte", "train", {"entailment": 1249, "not_entailment": 1241}),
    ("rte", "validation", {"entailment": 146, "not_entailment": 131}),
    ("cb", "train", {"contradiction": 119, "entailment": 115, "neutral": 16}),
    ("cb", "validation", {"contradiction": 28, "entailment": 23, "neutral": 5}),
]


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not beside the checkout")
@pytest.mark.parametrize("task_name,split,labels", SHARED_COUNTS)
def test_shared_data_loads_with_the_documented_counts(task_name: str, split: str, labels: dict) -> None:
    examples = load_split(_task(task_name, data_dir=str(SHARED_DATA / task_name)), split)
    assert Counter(example.label for example in examples) == labels
    assert all(all(example.fields.values()) for example in examples)


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not beside the checkout")
def test_rte_reads_lu_et_al_column_names_with_an_override() -> None:
    task = _task("rte", data_dir=str(SHARED_DATA / "rte"),
                 **{"files.splits": {"train": "lu_ordered-prompt/train.jsonl", "validation": "lu_ordered-prompt/dev.jsonl"},
                    "files.columns": {"premise": "sentence_1", "hypothesis": "sentence_2"}})
    examples = load_split(task, "validation")
    assert Counter(example.label for example in examples) == {"entailment": 146, "not_entailment": 131}


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


# Tasks without data in ../shared/data: a few rows in the documented file layout, raw label -> label name.
LAYOUTS = {
    "mr": ([{"sentence": "simplistic , silly and tedious .", "label": "0"}, {"sentence": "a joy .", "label": "1"}],
           ["negative", "positive"]),
    "cr": ([{"sentence": "it broke .", "label": "0"}, {"sentence": "works great .", "label": "1"}],
           ["negative", "positive"]),
    "subj": ([{"sentence": "a charming film .", "label": "0"}, {"sentence": "he moves to rome .", "label": "1"}],
             ["subjective", "objective"]),
    "dbpedia": ([{"sentence": "Monster Night is a 2006 film.", "label": "13"},
                 {"sentence": " RNA Biology is a scientific journal.", "label": "14"}], ["film", "book"]),
    "boolq": ([{"question": "is it", "passage": "It is.", "idx": 0, "label": True},
               {"question": "is it not", "passage": "It is.", "idx": 1, "label": False}], ["yes", "no"]),
}


@pytest.mark.parametrize("task_name", sorted(LAYOUTS))
def test_documented_file_layout_loads(task_name: str, tmp_path: Path) -> None:
    rows, labels = LAYOUTS[task_name]
    task = _task(task_name, data_dir=str(tmp_path))
    for split in (task.demo_split, task.eval_split):
        _write(tmp_path / task.files.splits[split], rows)
        examples = load_split(task, split)
        assert [example.label for example in examples] == labels
        assert [dict(example.fields) for example in examples] == [
            {field: str(row[task.files.columns.get(field, field)]) for field in task.fields} for row in rows
        ]


@pytest.mark.parametrize("task_name,template_name", sorted(CHANNEL_QUERY))
def test_channel_template_scores_the_input_after_the_label(task_name: str, template_name: str) -> None:
    task = _task(task_name)
    template = load_template(task, template_name)
    assert is_channel(template, task.fields)
    _, _, query_fields, query_label = EXAMPLES[task_name]
    prompts = build_channel_prompts(template, [], Example("q", query_fields, query_label))
    gold = prompts[list(task.labels).index(query_label)]
    (continuation,) = gold.continuations
    assert gold.context() + continuation == CHANNEL_QUERY[task_name, template_name]
    assert continuation.strip() == next(iter(query_fields.values()))
