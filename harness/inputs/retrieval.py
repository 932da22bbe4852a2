"""Nearest neighbours of each test input in the demonstration pool: BM25, TF-IDF cosine, or the
cosine of sentence embeddings (a sentence-transformers encoder, when installed).

BM25 and TF-IDF run on an inverted index of lower-cased word tokens, so a query only touches the
pool entries that share a word with it. Ties go to the earlier pool entry, so results are stable.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Callable, Sequence

import numpy as np

from harness.errors import HarnessError
from harness.sources.hub import resolve_model_source

BM25_K1 = 1.5  # term-frequency saturation (Okapi BM25, as in Lucene and rank_bm25)
BM25_B = 0.75  # document-length normalisation
_WORD = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class RetrievalIndex:
    """Term counts and an inverted index of a pool; scores every pool entry for a tokenized query."""

    def __init__(self, documents: Sequence[str]) -> None:
        self.counts = [Counter(tokenize(document)) for document in documents]
        self.lengths = [sum(counts.values()) for counts in self.counts]
        self.average_length = sum(self.lengths) / max(len(self.lengths), 1)
        self.postings: dict[str, list[int]] = defaultdict(list)
        for position, counts in enumerate(self.counts):
            for term in counts:
                self.postings[term].append(position)
        size = len(self.counts)
        self.bm25_idf = {t: math.log((size - len(p) + 0.5) / (len(p) + 0.5) + 1) for t, p in self.postings.items()}
        self.tfidf_idf = {t: math.log((1 + size) / (1 + len(p))) + 1 for t, p in self.postings.items()}
        self.norms = [
            math.sqrt(sum((count * self.tfidf_idf[term]) ** 2 for term, count in counts.items())) for counts in self.counts
        ]

    def bm25(self, query: list[str]) -> list[float]:
        """Okapi BM25, with Lucene's always-positive idf."""
        scores = [0.0] * len(self.counts)
        for term in set(query):
            for position in self.postings.get(term, ()):
                frequency = self.counts[position][term]
                length_norm = 1 - BM25_B + BM25_B * self.lengths[position] / self.average_length
                scores[position] += self.bm25_idf[term] * frequency * (BM25_K1 + 1) / (frequency + BM25_K1 * length_norm)
        return scores

    def tfidf_cosine(self, query: list[str]) -> list[float]:
        """Cosine of tf-idf vectors: raw counts, smoothed idf ln((1+N)/(1+df)) + 1 (as scikit-learn)."""
        weights = {term: count * self.tfidf_idf[term] for term, count in Counter(query).items() if term in self.postings}
        query_norm = math.sqrt(sum(w * w for w in weights.values()))
        scores = [0.0] * len(self.counts)
        if not query_norm:
            return scores
        for term, weight in weights.items():
            for position in self.postings[term]:
                scores[position] += weight * self.counts[position][term] * self.tfidf_idf[term]
        return [score / (query_norm * norm) if norm else 0.0 for score, norm in zip(scores, self.norms)]


LEXICAL: dict[str, Callable[[RetrievalIndex, list[str]], list[float]]] = {
    "bm25": RetrievalIndex.bm25, "tfidf": RetrievalIndex.tfidf_cosine,
}
RETRIEVERS = (*LEXICAL, "embedding")
EMBEDDING_BATCH = 64


def nearest_neighbours(method: str, pool: Sequence[str], queries: Sequence[str], k: int,
                       encoder: str | None = None) -> list[list[int]]:
    """For each query, the pool positions of its k best matches, best first."""
    if method == "embedding":
        return _embedding_neighbours(encoder, pool, queries, k)
    index = RetrievalIndex(pool)
    score = LEXICAL[method]
    return [_best_first(np.asarray(score(index, tokenize(query))), k) for query in queries]


def _best_first(scores: np.ndarray, k: int) -> list[int]:
    """Positions of the k highest scores; stable, so ties go to the earlier pool entry."""
    return np.argsort(-scores, kind="stable")[:k].tolist()


def _embedding_neighbours(encoder: str | None, pool: Sequence[str], queries: Sequence[str], k: int) -> list[list[int]]:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise HarnessError("demos=embedding needs sentence-transformers: pip install 'harness[retrieval]'") from None
    if not encoder:
        raise HarnessError("demos=embedding needs retriever=<sentence-transformers model id or path>")
    source, local_only = resolve_model_source(encoder, None, "sentence encoder", hint="set retriever=<local path>")
    try:
        model = SentenceTransformer(source, local_files_only=local_only)
    except (OSError, ValueError) as error:
        raise HarnessError(f"cannot load sentence encoder '{encoder}': {str(error).splitlines()[0]}") from None
    options = {"batch_size": EMBEDDING_BATCH, "normalize_embeddings": True, "convert_to_numpy": True,
               "show_progress_bar": False}
    similarity = model.encode(list(queries), **options) @ model.encode(list(pool), **options).T
    return [_best_first(row, k) for row in similarity]
