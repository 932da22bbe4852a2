"""Study records: what a sensitivity study varied and which run holds each configuration.

`python -m harness sensitivity` (harness/cli/sensitivity.py) designs a study, runs it through Hydra's
multirun and writes this record to <output_dir>/studies/<name>.json; `python -m harness report` reads
it (harness/report/studies.py) to decompose the variance. The runs themselves are ordinary run
records: the study only names them, so a rerun of the study reuses every run already complete.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.config import Enumerated
from harness.files import write_text_atomic
from harness.runs.records import RecordError

STUDY_FORMAT = 1
STUDIES_DIR = "studies"  # under the results directory


class Source(Enumerated):
    """What a study can vary; each is a factor of the design."""

    set = "set"  # which k examples are drawn (demonstrations, or the training set): the run seed
    order = "order"  # their order in the prompt (icl only), within each set
    template = "template"
    label_words = "label_words"  # the template's alternative verbalizer sets
    calibration = "calibration"  # contextual calibration on and off: read from the same runs (the same scores)
    train_seed = "train_seed"  # fine-tuning's seed, with the training set held fixed
    chat_template = "chat_template"  # plain prompts and the model's chat template


# What a source is called in a sentence ("72% of the variance comes from the order of the demonstrations").
PHRASES = {
    "set": "which examples are drawn",
    "order": "the order of the demonstrations",
    "template": "the template",
    "label_words": "the label words",
    "train_seed": "the training seed",
    "chat_template": "the prompt format (plain or the chat template)",
}


@dataclass(frozen=True)
class FactorSpec:
    name: str  # a Source value other than calibration
    levels: list[str]  # as written on the command line: "1", "[0,1,2,3]", "review", "null"
    within: str | None = None  # nested in this factor (order within set)


@dataclass(frozen=True)
class Cell:
    levels: list[int]  # the level index of each of its condition's factors
    run_dir: str
    calibrated: bool  # read the run's calibrated predictions; False: its scores before calibration


@dataclass(frozen=True)
class Condition:
    """One decomposition: a method, with or without calibration, over its factors' full crossing."""

    name: str  # "icl", "icl, contextual calibration", "lora"
    method: str
    factors: list[FactorSpec]
    cells: list[Cell]


@dataclass(frozen=True)
class Study:
    name: str
    task: str
    model: str
    shots: int
    command: str  # the sensitivity command that made it
    conditions: list[Condition]
    format: int = STUDY_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Study:
        try:
            raw = json.loads(text)
            if raw.get("format") != STUDY_FORMAT:
                raise RecordError(f"study format {raw.get('format')}, this harness reads {STUDY_FORMAT}")
            conditions = [Condition(name=c["name"], method=c["method"],
                                    factors=[FactorSpec(**f) for f in c["factors"]],
                                    cells=[Cell(**cell) for cell in c["cells"]]) for c in raw["conditions"]]
            return cls(**{**raw, "conditions": conditions})
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise RecordError(f"not a study record ({error})") from None


def study_path(results_dir: Path, name: str) -> Path:
    return results_dir / STUDIES_DIR / f"{name}.json"


def write_study(results_dir: Path, study: Study) -> Path:
    path = study_path(results_dir, study.name)
    write_text_atomic(path, study.to_json())
    return path


def read_studies(results_dir: Path) -> tuple[list[Study], list[tuple[Path, str]]]:
    """Every study record under results_dir/studies, and the files that are not valid ones (path, why)."""
    studies, problems = [], []
    for path in sorted((results_dir / STUDIES_DIR).glob("*.json")):
        try:
            studies.append(Study.from_json(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, RecordError) as error:
            problems.append((path, str(error)))
    return studies, problems
