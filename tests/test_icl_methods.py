"""ICL methods of the literature: demonstration selection and order, retrieval, calibration, PMI, channel, ECE."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.inputs.data import Example
from harness.inputs.demos import demonstrations_per_example, reorder, select_demonstrations
from harness.inputs.prompts import (
    Template,
    build_channel_prompts,
    content_free_prompt,
    domain_premise_prompt,
    is_channel,
)
from harness.inputs.retrieval import RetrievalIndex, nearest_neighbours, tokenize
from harness.kinds.calibration import (
    content_free_distribution,
    contextual_calibration,
    expected_calibration_error,
    label_distribution,
    pmi_scores,
)
from harness.runs.records import RunRecord
from helpers import read_record, run_cli, run_in_process

POOL = [
    Example("p0", {"text": "the cat sat on the mat"}, "neg"),
    Example("p1", {"text": "stock markets fell sharply today"}, "pos"),
    Example("p2", {"text": "the team won the football match"}, "neg"),
    Example("p3", {"text": "a cat and a dog played"}, "pos"),
    Example("p4", {"text": "football fans cheered the team"}, "pos"),
]
LABELS = ["neg", "pos"]


def _template(example: str) -> Template:
    from harness.inputs.expressions import ENVIRONMENT

    return Template(name="t", description="", instruction=None, example=ENVIRONMENT.from_string(example),
                    separator="\n\n", verbalizers={"neg": "bad", "pos": "good"})


# --- retrieval ---------------------------------------------------------------------------------------------------

def test_retrieval_finds_the_known_nearest_neighbour() -> None:
    pool = [e.fields["text"] for e in POOL]
    for method in ("bm25", "tfidf"):
        [cats, sport, markets] = nearest_neighbours(method, pool, ["my cat", "football team", "markets fell"], k=2)
        assert cats[0] in (0, 3) and set(cats) == {0, 3}, method
        assert set(sport) == {2, 4}, method
        assert markets[0] == 1, method


def test_retrieval_ties_go_to_the_earlier_pool_entry() -> None:
    pool = ["dogs bark", "stock prices", "dogs bark", "cats purr", "dogs bark"]  # three identical documents
    for method in ("bm25", "tfidf"):
        [[first, second, third], unmatched] = nearest_neighbours(method, pool, ["dogs bark", "zebra"], k=3)
        assert [first, second, third] == [0, 2, 4], method
        assert unmatched == [0, 1, 2], method  # every score 0: pool order


def test_bm25_value_by_hand() -> None:
    index = RetrievalIndex(["a b", "a c c", "d"])
    # N = 3, avgdl = 2; "c": df 1, idf = ln((3 - 1 + .5) / (1 + .5) + 1) = ln(8/3); in doc 1: tf 2, dl 3
    idf = math.log((3 - 1 + 0.5) / (1 + 0.5) + 1)
    expected = idf * 2 * 2.5 / (2 + 1.5 * (1 - 0.75 + 0.75 * 3 / 2))
    assert index.bm25(tokenize("c"))[1] == pytest.approx(expected)
    assert index.bm25(tokenize("c"))[0] == 0.0 and index.bm25(tokenize("zzz")) == [0.0, 0.0, 0.0]


def test_tfidf_cosine_by_hand() -> None:
    index = RetrievalIndex(["a b", "a"])
    idf_a, idf_b = math.log(3 / 3) + 1, math.log(3 / 2) + 1
    # query "a" against "a b": (idf_a * idf_a) / (idf_a * sqrt(idf_a^2 + idf_b^2)); against "a": 1
    assert index.tfidf_cosine(["a"]) == pytest.approx([idf_a / math.hypot(idf_a, idf_b), 1.0])


def test_tfidf_matches_scikit_learn() -> None:
    feature_extraction = pytest.importorskip("sklearn.feature_extraction.text")
    pool = [e.fields["text"] for e in POOL]
    vectorizer = feature_extraction.TfidfVectorizer(token_pattern=r"(?u)\b\w+\b")
    matrix = vectorizer.fit_transform(pool)
    query = "the cat and the football team"
    expected = (vectorizer.transform([query]) @ matrix.T).toarray()[0]
    assert RetrievalIndex(pool).tfidf_cosine(tokenize(query)) == pytest.approx(expected.tolist(), abs=1e-12)


@pytest.fixture(scope="module")
def tiny_sentence_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 1-layer BERT with mean pooling, saved as a sentence-transformers model."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    import torch
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizer

    directory = tmp_path_factory.mktemp("encoder")
    words = sorted({word for example in POOL for word in tokenize(example.fields["text"])} | {"my"})
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(vocabulary), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64))
    bert.save_pretrained(directory / "bert")
    # (in transformers 5 a tokenizer built from vocab_file= maps every word to [UNK]; a dict works)
    BertTokenizer(vocab={word: i for i, word in enumerate(vocabulary)}).save_pretrained(directory / "bert")
    encoder = sentence_transformers.SentenceTransformer(
        modules=[Transformer(str(directory / "bert")), Pooling(32, "mean")], device="cpu")
    encoder.save(str(directory / "encoder"))
    return directory / "encoder"


def test_embedding_retrieval_finds_the_same_sentence_first(tiny_sentence_encoder: Path) -> None:
    pool = [e.fields["text"] for e in POOL]
    queries = [pool[3], pool[1]]  # an exact copy has cosine 1, whatever the (random) encoder
    neighbours = nearest_neighbours("embedding", pool, queries, k=3, encoder=str(tiny_sentence_encoder))
    assert [row[0] for row in neighbours] == [3, 1] and all(len(set(row)) == 3 for row in neighbours)


def test_retrieved_demonstrations_put_the_nearest_last() -> None:
    queries = [Example("q0", {"text": "a cat"}, "neg"), Example("q1", {"text": "football"}, "pos")]
    per_example = demonstrations_per_example(queries, POOL, 2, seed=1, strategy="bm25", labels=LABELS, ids=None,
                                             order="drawn")
    nearest = nearest_neighbours("bm25", [e.fields["text"] for e in POOL], ["a cat", "football"], 2)
    assert [[d.id for d in demos] for demos in per_example] == [[f"p{i}" for i in reversed(row)] for row in nearest]
    with pytest.raises(HarnessError, match="per test example"):
        select_demonstrations(POOL, 2, seed=1, strategy="tfidf", labels=LABELS)


# --- fixed ids and order -----------------------------------------------------------------------------------------

def test_fixed_ids_in_the_given_order() -> None:
    demos = select_demonstrations(POOL, 3, seed=9, strategy="ids", labels=LABELS, ids=["p4", "p0", "p2"])
    assert [d.id for d in demos] == ["p4", "p0", "p2"]
    with pytest.raises(HarnessError, match="not in the demonstration split: p9"):
        select_demonstrations(POOL, 2, seed=1, strategy="ids", labels=LABELS, ids=["p0", "p9"])
    with pytest.raises(HarnessError, match="exactly shots=3"):
        select_demonstrations(POOL, 3, seed=1, strategy="ids", labels=LABELS, ids=["p0"])


def test_order_drawn_shuffled_and_permutation() -> None:
    drawn = select_demonstrations(POOL, 4, seed=2, strategy="random", labels=LABELS)
    assert reorder(drawn, "drawn", seed=2) == drawn
    assert [d.id for d in reorder(drawn, [3, 2, 1, 0], seed=2)] == [d.id for d in reversed(drawn)]
    shuffled = reorder(drawn, "shuffled", seed=2)
    assert shuffled == reorder(drawn, "shuffled", seed=2) and sorted(d.id for d in shuffled) == sorted(d.id for d in drawn)
    assert any(reorder(drawn, "shuffled", seed=s) != drawn for s in range(5))
    one_set = demonstrations_per_example(POOL[:2], POOL, 4, 2, "random", LABELS, None, [1, 0, 3, 2])
    assert [d.id for d in one_set[0]] == [drawn[i].id for i in (1, 0, 3, 2)] and one_set[0] is one_set[1]
    for bad in ([0, 1], [0, 0, 1, 2], "backwards"):
        with pytest.raises(HarnessError, match="demo_order must be"):
            demonstrations_per_example(POOL[:1], POOL, 4, 2, "random", LABELS, None, bad)


# --- calibration math --------------------------------------------------------------------------------------------

def test_contextual_calibration_by_hand() -> None:
    probabilities = np.array([[0.8, 0.2], [0.6, 0.4]])
    content_free_scores = np.log([[0.75, 0.25], [0.65, 0.35]])  # two content-free inputs: mean (0.7, 0.3)
    assert content_free_distribution(content_free_scores) == pytest.approx([0.7, 0.3])
    calibrated = contextual_calibration(probabilities, content_free_distribution(content_free_scores))
    # (0.8 / 0.7, 0.2 / 0.3) = (1.142857, 0.666667), normalised; (0.6 / 0.7, 0.4 / 0.3) = (0.857143, 1.333333)
    assert calibrated[0] == pytest.approx([1.142857 / 1.809524, 0.666667 / 1.809524], abs=1e-6)
    assert calibrated[1] == pytest.approx([0.857143 / 2.190476, 1.333333 / 2.190476], abs=1e-6)
    assert calibrated[1].argmax() == 1  # the second example flips to the label the model under-predicts


def test_label_distribution_pmi_and_ece_by_hand() -> None:
    assert label_distribution([[math.log(3), math.log(1)]])[0] == pytest.approx([0.75, 0.25])
    assert pmi_scores([[-1.0, -2.0]], [-0.5, -3.0])[0] == pytest.approx([-0.5, 1.0])
    probabilities = np.array([[0.95, 0.05], [0.9, 0.1], [0.35, 0.65], [0.4, 0.6]])
    # confidences .95, .9, .65, .6 land in four bins ((.9, 1], (.8, .9], (.6, .7], (.5, .6]), right, wrong, right, wrong
    ece = expected_calibration_error(probabilities, [0, 1, 1, 0])
    assert ece == pytest.approx(0.25 * (0.05 + 0.9 + 0.35 + 0.6))
    # two in one bin: (.6, .7] holds .65 (right) and .7 (wrong): |0.5 - 0.675| for half the examples
    assert expected_calibration_error(np.array([[0.35, 0.65], [0.7, 0.3]]), [1, 1]) == pytest.approx(0.175)


# --- prompts for calibration and channel scoring -----------------------------------------------------------------

def test_content_free_and_domain_premise_prompts() -> None:
    template = _template("Review: {{ text }}\nSentiment: {{ answer }}")
    demos = [POOL[0]]
    content_free = content_free_prompt(template, demos, ["text"], "N/A")
    assert content_free.context() == "Review: the cat sat on the mat\nSentiment: bad\n\nReview: N/A\nSentiment:"
    assert content_free.continuations == (" bad", " good")
    premise = domain_premise_prompt(template, demos, ["text"])
    assert premise.context() == "Review: the cat sat on the mat\nSentiment: bad\n\nSentiment:"
    with pytest.raises(HarnessError, match="no text between the input and the answer"):
        domain_premise_prompt(_template("{{ text }} {{ answer }}"), demos, ["text"])


def test_channel_prompts_score_the_input_after_each_label() -> None:
    template = _template("A {{ answer }} one . {{ text }}")
    assert is_channel(template, ["text"]) and not is_channel(_template("{{ text }} It was {{ answer }}"), ["text"])
    prompts = build_channel_prompts(template, [POOL[1]], Example("q", {"text": "a dull mess"}, "neg"))
    assert [p.context() for p in prompts] == ["A good one . stock markets fell sharply today\n\nA bad one .",
                                              "A good one . stock markets fell sharply today\n\nA good one ."]
    assert [p.continuations for p in prompts] == [(" a dull mess",), (" a dull mess",)]


# --- end to end, tiny model --------------------------------------------------------------------------------------

def _run(tmp_path: Path, env: dict, model: Path, *overrides: str):
    return run_cli("run", "task=toy", f"model={model}", f"output_dir={tmp_path / 'out'}", *overrides,
                   env=env, cwd=tmp_path)


def _records(output: Path) -> list[tuple[RunRecord, list[dict]]]:
    runs = sorted(p for p in output.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [(read_record(p), [json.loads(line) for line in (p / "predictions.jsonl").open()]) for p in runs]


def test_contextual_calibration_run_with_retrieved_demonstrations(tmp_path: Path, harness_env: dict,
                                                                  tiny_model_dir: Path) -> None:
    done = _run(tmp_path, harness_env, tiny_model_dir, "shots=2", "demos=bm25", "calibration=contextual")
    assert done.returncode == 0, done.stderr
    [(metrics, rows)] = _records(tmp_path / "out")
    assert metrics.calibration == "contextual" and metrics.demo_ids is None  # one set per example
    assert set(metrics.uncalibrated) == {"accuracy", "macro_f1", "ece"} and 0 <= metrics.metrics["ece"] <= 1
    content_free = {tuple(entry["demo_ids"]): entry["scores"] for entry in metrics.calibration_scores}
    assert all(len(scores) == 3 for scores in content_free.values())  # N/A, "" and [MASK]
    for row in rows:  # the recorded probabilities are the recorded scores, calibrated by hand
        raw = label_distribution([list(row["scores"].values())])
        cf = label_distribution([list(s.values()) for s in content_free[tuple(row["demo_ids"])]]).mean(axis=0)
        expected = contextual_calibration(raw, cf)[0]
        assert list(row["probabilities"].values()) == pytest.approx(expected.tolist(), abs=1e-9)
        assert row["prediction"] == LABELS[int(expected.argmax())]
    nearest = nearest_neighbours("bm25", _train_texts(), ["superb from start to end"], 2)[0]  # test item te1
    assert rows[1]["id"] == "te1" and rows[1]["demo_ids"] == [f"tr{i}" for i in reversed(nearest)]


def _train_texts() -> list[str]:
    from helpers import NEGATIVE, POSITIVE

    return POSITIVE[:6] + NEGATIVE[:6]


def test_pmi_and_channel_runs(tmp_path: Path, harness_env: dict, tiny_model_dir: Path) -> None:
    for overrides in (["calibration=pmi"], ["scorer=channel", "template=channel"]):
        run_in_process("task=toy", f"model={tiny_model_dir}", "shots=1", f"output_dir={tmp_path / 'out'}", *overrides)
    (channel, channel_rows), (pmi, pmi_rows) = sorted(_records(tmp_path / "out"), key=lambda r: r[0].scorer)
    assert channel.scorer == "channel" and pmi.calibration == "pmi"
    [premise] = pmi.calibration_scores
    for row in pmi_rows:
        adjusted = np.array(list(row["scores"].values())) - np.array(list(premise["scores"][0].values()))
        assert row["prediction"] == LABELS[int(adjusted.argmax())]
    # channel: one context per label, each followed by the input; direct scoring: one context, then each label
    assert channel.cost.inference_tokens_per_example > 1.5 * pmi.cost.inference_tokens_per_example
    assert all(set(row["scores"]) == set(LABELS) for row in channel_rows)


@pytest.mark.parametrize(("overrides", "message"), [
    (["scorer=channel"], "scorer=channel needs a template that puts {{ answer }} before the input"),
    (["template=channel"], "template 'channel' puts the answer before the input"),
    (["calibration=platt"], "unknown calibration 'platt' (calibrations: none, contextual, pmi)"),
    (["calibration=contextual", "scorer=generate"], "calibration=contextual applies to scorer=rank"),
    (["method=lora", "shots=2", "demos=tfidf"], "fine-tuning needs one training set"),
    (["shots=2", "demos=ids", "demo_ids=[tr0]"], "exactly shots=2"),
])
def test_bad_method_settings_fail_in_one_line(overrides: list[str], message: str, tmp_path: Path, harness_env: dict,
                                             tiny_model_dir: Path) -> None:
    done = _run(tmp_path, harness_env, tiny_model_dir, *overrides)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_template_all_runs_every_direct_template(tmp_path: Path, harness_env: dict, task_root: Path,
                                                 tiny_model_dir: Path) -> None:
    root = tmp_path / "root"
    (root / "tasks").mkdir(parents=True)
    (root / "tasks" / "toy3.yaml").write_text(
        (task_root / "tasks" / "toy.yaml").read_text().replace("name: toy", "name: toy3"))
    prompts = root / "prompts" / "toy3"
    prompts.mkdir(parents=True)
    for name in ("plain", "instructed", "multi", "channel"):
        (prompts / f"{name}.yaml").write_text((task_root / "prompts" / "toy" / f"{name}.yaml").read_text())
    env = {**harness_env, "HARNESS_PATH": str(root)}
    done = run_cli("run", "task=toy3", f"model={tiny_model_dir}", f"output_dir={tmp_path / 'out'}", "template=all",
                   "shots=1", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(m.template for m, _ in _records(tmp_path / "out")) == ["instructed", "multi", "plain"]
    assert "across 3 templates: accuracy" in done.stdout


def test_embedding_demonstrations_in_a_run(tmp_path: Path, harness_env: dict, tiny_model_dir: Path,
                                           tiny_sentence_encoder: Path) -> None:
    done = _run(tmp_path, harness_env, tiny_model_dir, "shots=2", "demos=embedding",
                f"retriever={tiny_sentence_encoder}")
    assert done.returncode == 0, done.stderr
    [(metrics, rows)] = _records(tmp_path / "out")
    assert metrics.demos == "embedding" and metrics.demo_ids is None
    assert all(len(row["demo_ids"]) == 2 for row in rows)
