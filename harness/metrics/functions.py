"""Predictions -> metrics.

`accuracy` and `macro_f1` are defined here: they work offline (evaluate.load fetches metric
scripts from the hub) and a run does not pay the second or so of importing evaluate, whose
evaluator pulls in transformers' pipelines. Any other name a task lists goes to evaluate.load,
so online users get every hub metric.
"""

from __future__ import annotations

import functools
import math
import re
import string
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from harness.config import AnswerConfig, AnswerFilter, TaskKind
from harness.errors import HarnessError
from harness.inputs.expressions import pattern_findall, pattern_sub
from harness.sources.hub import require_hub

if TYPE_CHECKING:
    import evaluate

NO_LABEL = -1  # a prediction that names no label (an unparsable generation): always wrong


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Share of predictions equal to the reference label."""
    return sum(int(p == r) for p, r in zip(predictions, references)) / len(references)


def macro_f1(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Unweighted mean of per-label F1 over the labels that occur in the references or the predictions
    (as scikit-learn's f1_score(average='macro')); a label never predicted and never correct scores 0.
    NO_LABEL predictions are misses of their gold label, not a label."""
    f1s = []
    for label in sorted((set(predictions) | set(references)) - {NO_LABEL}):
        true_pos = sum(1 for p, r in zip(predictions, references) if p == r == label)
        false_pos = sum(1 for p, r in zip(predictions, references) if p == label != r)
        false_neg = sum(1 for p, r in zip(predictions, references) if r == label != p)
        denominator = 2 * true_pos + false_pos + false_neg
        f1s.append(2 * true_pos / denominator if denominator else 0.0)
    return sum(f1s) / len(f1s)


MUTUAL_INFO = "acc_mutual_info"  # needs the options' log-likelihoods without context too (harness/kinds/multiple_choice.py)
BUILTIN_METRICS: dict[str, Callable[[Sequence[int], Sequence[int]], float]] = {
    "accuracy": accuracy, "macro_f1": macro_f1,
    # multiple choice (harness/kinds/multiple_choice.py): the same accuracy, of predictions chosen four ways
    "acc": accuracy, "acc_norm": accuracy, "acc_bytes": accuracy, MUTUAL_INFO: accuracy,
    # short answers (kind: generate): the share of generated answers that match an accepted answer
    "exact_match": accuracy,
}
CLOZE_METRICS = ("acc", "perplexity", "bits_per_byte")  # cloze tasks (cloze_metrics): from greedy flags and log-likelihoods
MEANS = {"accuracy", "acc", "acc_norm", "acc_bytes", MUTUAL_INFO, "exact_match"}
# what only the options of a multiple-choice item can give: a classification task would get plain accuracy under them
CHOICE_ONLY_METRICS = ("acc_norm", "acc_bytes", MUTUAL_INFO)
# perplexity tasks (perplexity_metrics): from each text's rolling log-likelihood
PERPLEXITY_METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")
KIND_METRICS = {TaskKind.cloze: CLOZE_METRICS, TaskKind.generate: ("exact_match",),  # the only ones they can compute
                TaskKind.perplexity: PERPLEXITY_METRICS}
LOWER_IS_BETTER = {"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"}
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def standard_error(name: str, predictions: Sequence[int], references: Sequence[int]) -> float | None:
    """Of a built-in metric over these test items: for an accuracy, the sample standard deviation of per-item
    correctness over sqrt(n), as lm-evaluation-harness reports; for macro-F1, the standard deviation over
    BOOTSTRAP_RESAMPLES resamples of the items (seeded). None for other metrics and for a single item."""
    n = len(references)
    if n < 2 or builtin_metric(name) is None:
        return None
    if name in MEANS or name.startswith("exact_match_"):
        correct = np.asarray(predictions) == np.asarray(references)
        return float(correct.std(ddof=1) / math.sqrt(n))
    resamples = np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
    return float(np.std(_macro_f1_resampled(np.asarray(predictions), np.asarray(references), resamples), ddof=1))


def _macro_f1_resampled(predicted: np.ndarray, gold: np.ndarray, resamples: np.ndarray) -> np.ndarray:
    """macro_f1 of each resample (a row of item indices), vectorised: the same definition as macro_f1."""
    f1_sums = np.zeros(len(resamples))
    present = np.zeros(len(resamples))
    for label in sorted((set(predicted.tolist()) | set(gold.tolist())) - {NO_LABEL}):
        true_pos = ((predicted == label) & (gold == label))[resamples].sum(axis=1)
        false_pos = ((predicted == label) & (gold != label))[resamples].sum(axis=1)
        false_neg = ((gold == label) & (predicted != label))[resamples].sum(axis=1)
        occurs = ((predicted == label) | (gold == label))[resamples].any(axis=1)
        denominator = 2 * true_pos + false_pos + false_neg
        f1_sums += np.where(denominator > 0, 2 * true_pos / np.maximum(denominator, 1), 0.0) * occurs
        present += occurs
    return f1_sums / np.maximum(present, 1)


def check_metrics(names: Sequence[str], kind: TaskKind = TaskKind.classify, answer: AnswerConfig | None = None) -> None:
    """Load every metric a task names now, before any scoring: an unknown name fails first, not last."""
    if kind in KIND_METRICS:
        known = answer_metrics(answer) if kind == TaskKind.generate and answer is not None else KIND_METRICS[kind]
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise HarnessError(f"a {kind} task's metrics are {', '.join(known)}; not {', '.join(unknown)}")
        return
    if kind != TaskKind.choice and set(names) & set(CHOICE_ONLY_METRICS):
        raise HarnessError(f"{', '.join(sorted(set(names) & set(CHOICE_ONLY_METRICS)))}: metrics of multiple-choice "
                           "tasks (kind: choice), whose items bring their own options; not of a classification task")
    for name in names:
        if name not in BUILTIN_METRICS:
            _hub_metric(name)


def extracted_answer(generation: str, spec: AnswerFilter) -> str:
    """The answer a filter takes out of a generation (lm-evaluation-harness's RegexFilter, then take_first)."""
    matches = pattern_findall(spec.regex, generation)
    if not matches:
        return spec.fallback
    try:
        match = matches[spec.group_select]
    except IndexError:
        return spec.fallback
    if isinstance(match, tuple):  # several groups: the first that matched
        match = next((group for group in match if group), spec.fallback)
    return match.strip()


def answer_metrics(spec: AnswerConfig) -> tuple[str, ...]:
    """What a short-answer task can report: exact_match, and exact_match_<name> per named extraction."""
    return ("exact_match", *(f"exact_match_{name}" for name in spec.filters))


def matching_answer(answer: str, references: Sequence[str], spec: AnswerConfig) -> int | None:
    """The first reference the answer equals once both are normalised as lm-evaluation-harness's exact_match
    does (regexes removed, then lower case, then punctuation removed), or None."""
    def normal(text: str) -> str:
        for pattern in spec.regexes_to_ignore:
            text = pattern_sub(pattern, "", text)
        if spec.ignore_case:
            text = text.lower()
        if spec.ignore_punctuation:
            text = text.translate(_NO_PUNCTUATION)
        return text

    mine = normal(answer)
    return next((index for index, reference in enumerate(references) if normal(reference) == mine), None)


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def cloze_metrics(names: Sequence[str], greedy: Sequence[bool], loglikelihoods: Sequence[float],
                  target_bytes: Sequence[int]) -> tuple[dict[str, float], dict[str, float]]:
    """A cloze task's metrics and standard errors, as lm-evaluation-harness's loglikelihood tasks (LAMBADA):
    `acc` the share of items whose target is the greedy continuation; `perplexity` exp of minus the mean
    per-item log-likelihood of the target (per item, not per token); `bits_per_byte` minus the summed
    log-likelihood in bits over the targets' summed UTF-8 bytes (lm-evaluation-harness's weighted mean).
    Standard errors: the delta method's for perplexity (perplexity times the standard error of the mean
    log-likelihood; lm-evaluation-harness bootstraps it); none for bits_per_byte, a ratio of sums."""
    correct = np.asarray(greedy, dtype=np.float64)
    values = np.asarray(loglikelihoods, dtype=np.float64)
    n = len(values)
    metrics: dict[str, float] = {}
    stderr: dict[str, float] = {}
    for name in names:
        if name == "acc":
            metrics[name] = float(correct.mean())
            if n > 1:
                stderr[name] = float(correct.std(ddof=1) / math.sqrt(n))
        elif name == "perplexity":
            metrics[name] = float(math.exp(-values.mean()))
            if n > 1:
                stderr[name] = float(metrics[name] * values.std(ddof=1) / math.sqrt(n))
        else:
            metrics[name] = float(-values.sum() / math.log(2) / sum(target_bytes))
    return metrics, stderr


def perplexity_metrics(names: Sequence[str], loglikelihoods: Sequence[float], words: Sequence[int],
                       text_bytes: Sequence[int]) -> dict[str, float]:
    """A perplexity task's metrics over its texts, as lm-evaluation-harness's loglikelihood_rolling tasks
    (wikitext): word_perplexity exp(-summed log-likelihood / summed words), byte_perplexity the same per
    UTF-8 byte, bits_per_byte -summed log-likelihood / summed bytes / ln 2. Ratios of sums over the whole
    corpus, so no per-item standard error."""
    total = float(np.sum(np.asarray(loglikelihoods, dtype=np.float64)))
    per = {"word_perplexity": sum(words), "byte_perplexity": sum(text_bytes), "bits_per_byte": sum(text_bytes)}
    metrics = {}
    for name in names:
        count = max(per[name], 1)
        metrics[name] = -total / count / math.log(2) if name == "bits_per_byte" else math.exp(-total / count)
    return metrics


def count_words(text: str) -> int:
    """Words as lm-evaluation-harness counts them for word_perplexity: the pieces between runs of whitespace."""
    return len(re.split(r"\s+", text))


def builtin_metric(name: str) -> Callable[[Sequence[int], Sequence[int]], float] | None:
    """A built-in metric by name; exact_match_<filter> is exact_match over that filter's answers."""
    return BUILTIN_METRICS.get("exact_match" if name.startswith("exact_match_") else name)


def compute_metrics(names: Sequence[str], predictions: Sequence[int], references: Sequence[int]) -> dict[str, float]:
    results: dict[str, float] = {}
    for name in names:
        if builtin_metric(name) is not None:
            results[name] = builtin_metric(name)(predictions, references)
        else:
            results.update(_hub_metric(name).compute(predictions=list(predictions), references=list(references)))
    return results


@functools.cache
def _hub_metric(name: str) -> evaluate.EvaluationModule:
    require_hub(f"metric '{name}'", hint=f"built-in metrics: {', '.join(BUILTIN_METRICS)}")
    import evaluate  # only here: built-in metrics do not pay for the import

    try:
        return evaluate.load(name)
    except Exception as error:  # evaluate raises many types; the user needs the message only
        raise HarnessError(f"cannot load metric '{name}': {str(error).splitlines()[0]}") from None
