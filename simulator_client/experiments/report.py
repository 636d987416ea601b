"""Tables and learning-curve plots of experiment results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simulator_client.experiments.context import CURVE_METRICS


def table_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Table 5 style rows: final Return, Length and R_avg per method, with the final
    model's hr@10 and ndcg@10 (``next_item_ranking``) where it was ranked."""
    rows = []
    for name, res in results["methods"].items():
        final = res["final"]
        ranking = res.get("ranking") or {}
        rows.append(
            {
                "method": name,
                "return": final["return"],
                "return_std": final["return_std"],
                "length": final["length"],
                "r_avg": final["r_avg"],
                **{key: ranking[key] for key in ("hr@10", "ndcg@10") if key in ranking},
                "R@0": res["curve"][0]["return"],
                "updates": res["train"]["updates"],
                "seconds": res["train"]["seconds"],
                "ms/step": 1000.0 * res["train"].get("seconds_per_step", 0.0),
            }
        )
    return rows


def plot_curves(results: dict[str, Any], path: str | Path) -> None:
    """Return, Length and R_avg against training steps, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    titles = {"return": "Return", "length": "Length", "r_avg": "R_avg"}
    for name, res in results["methods"].items():
        steps = [p["step"] for p in res["curve"]]
        for ax, key in zip(axes, CURVE_METRICS, strict=True):
            ax.plot(steps, [p[key] for p in res["curve"]], marker="o", ms=3, label=name)
    for ax, key in zip(axes, CURVE_METRICS, strict=True):
        ax.set_title(titles[key])
        ax.set_xlabel("training interactions")
        ax.grid(alpha=0.3)
    axes[0].legend()
    cfg = results["config"]
    fig.suptitle(f"{results['env']}: test-environment metrics, seed {cfg['seed']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Methods defined in their own modules register themselves when imported.
