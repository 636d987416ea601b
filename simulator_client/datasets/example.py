"""A small generated shop in the bring-your-own format, with string ids.

``ialp env example DIR`` writes ``DIR/items.tsv``, ``DIR/sequences.tsv`` and
``DIR/scenario.json`` (the platform description the language-model judge's prompt needs,
``ialp pretrain --scenario``): what a
newcomer's own export looks like (opaque string ids, text attributes, ordered
sequences), so the README's walkthrough runs on any machine before real data is at hand.
The shoppers have structure a recommender can find: each prefers two sports, buys
popular items of those more often, and now and then something else.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPORTS = ("hiking", "camping", "cycling", "running", "climbing", "fishing", "skiing",
          "swimming")
KINDS = ("jacket", "shoes", "bag", "bottle", "gloves", "light", "shirt", "socks", "hat",
         "tool kit")
COLOURS = ("red", "blue", "black", "green", "grey", "orange")
BRANDS = ("Alpa", "Borea", "Cumbre", "Delta Gear", "Estrel")


@dataclass(frozen=True)
class ExampleShop:
    """Sizes of the generated shop."""

    items: int = 240
    """Catalogue size."""
    users: int = 400
    """Shoppers (one sequence each)."""
    min_len: int = 6
    """Shortest sequence."""
    max_len: int = 24
    """Longest sequence."""
    seed: int = 0
    """Seed of everything generated."""


def write_example(out_dir: str | Path, shop: ExampleShop | None = None) -> tuple[Path, Path]:
    """Write ``items.tsv``, ``sequences.tsv`` and ``scenario.json`` into ``out_dir``;
    returns the first two paths."""
    shop = shop or ExampleShop()
    if shop.items < len(SPORTS) or shop.users < 10 or not 1 <= shop.min_len <= shop.max_len:
        raise ValueError(f"example shop too small or inconsistent: {shop}")
    rng = np.random.default_rng(shop.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    sport = rng.integers(0, len(SPORTS), size=shop.items)
    codes = rng.choice(16**6, size=shop.items, replace=False)
    ids = [f"SKU-{int(c):06X}" for c in codes]
    items_path = out / "items.tsv"
    with items_path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["item_id", "title", "category", "brand"])
        for i in range(shop.items):
            kind = KINDS[int(rng.integers(len(KINDS)))]
            colour = COLOURS[int(rng.integers(len(COLOURS)))]
            w.writerow([ids[i], f"{colour} {SPORTS[sport[i]]} {kind}", SPORTS[sport[i]],
                        BRANDS[int(rng.integers(len(BRANDS)))]])

    # Popularity within a sport: Zipf-like weights over a random order of its items.
    weight = np.empty(shop.items)
    for s in range(len(SPORTS)):
        members = np.flatnonzero(sport == s)
        weight[members] = 1.0 / (1.0 + rng.permutation(len(members)))
    seq_path = out / "sequences.tsv"
    with seq_path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["user_id", "item_ids"])
        for u in range(shop.users):
            liked = rng.choice(len(SPORTS), size=2, replace=False)
            pref = np.where(np.isin(sport, liked), weight, 0.08 * weight)
            n = int(rng.integers(shop.min_len, shop.max_len + 1))
            n = min(n, shop.items)
            seq = rng.choice(shop.items, size=n, replace=False, p=pref / pref.sum())
            w.writerow([f"user-{u:05d}", " ".join(ids[i] for i in seq)])
    scenario = {"scenario": "outdoor sports shopping", "item": "product",
                "attributes": ["title", "category", "brand"], "behavior": "purchase"}
    (out / "scenario.json").write_text(json.dumps(scenario, indent=2) + "\n", encoding="utf-8")
    return items_path, seq_path
