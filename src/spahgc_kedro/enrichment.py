"""Offline over-representation analysis: hypergeometric test with Benjamini-Hochberg FDR.

Gene sets come from user-provided GMT files (e.g. KEGG or Reactome exported from
MSigDB); nothing is downloaded. The universe is the gene panel: only genes that could
have been called well predicted count, so large panels do not inflate significance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ENRICHMENT_COLUMNS = (
    "source",
    "term",
    "set_size",
    "overlap",
    "n_selected",
    "n_universe",
    "p_value",
    "fdr",
    "genes",
)


def read_gmt(path: str | Path) -> dict[str, set[str]]:
    """Gene sets of a GMT file: one set a line, `name<TAB>description<TAB>gene...`."""
    gene_sets = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        fields = [f.strip() for f in line.split("\t")]
        if not line.strip():
            continue
        if len(fields) < 3:
            raise ValueError(f"{path}, line {number}: a GMT line needs a name, a description and genes.")
        gene_sets[fields[0]] = {g.upper() for g in fields[2:] if g}
    return gene_sets


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (monotone, capped at 1)."""
    p_values = np.asarray(p_values, dtype=np.float64)
    n = p_values.size
    if n == 0:
        return p_values
    order = np.argsort(p_values)
    scaled = p_values[order] * n / np.arange(1, n + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def hypergeometric_enrichment(
    selected: list[str],
    universe: list[str],
    gene_sets: dict[str, set[str]],
    min_set_size: int = 3,
    max_set_size: int = 500,
    source: str = "",
) -> pd.DataFrame:
    """P(overlap >= observed) of each gene set with the selected genes, within the universe."""
    from scipy.stats import hypergeom

    universe_set = {g.upper() for g in universe}
    selected_set = {g.upper() for g in selected} & universe_set
    rows = []
    for term, members in gene_sets.items():
        in_universe = members & universe_set
        if not min_set_size <= len(in_universe) <= max_set_size:
            continue
        overlap = in_universe & selected_set
        rows.append(
            {
                "source": source,
                "term": term,
                "set_size": len(in_universe),
                "overlap": len(overlap),
                "n_selected": len(selected_set),
                "n_universe": len(universe_set),
                # sf(k - 1) = P(X >= k) for M = universe, n = set size, N = drawn.
                "p_value": float(
                    hypergeom.sf(len(overlap) - 1, len(universe_set), len(in_universe), len(selected_set))
                ),
                "genes": ",".join(sorted(overlap)),
            }
        )
    table = pd.DataFrame(rows, columns=[c for c in ENRICHMENT_COLUMNS if c != "fdr"])
    table.insert(table.columns.get_loc("p_value") + 1, "fdr", benjamini_hochberg(table["p_value"].to_numpy()))
    return table.sort_values(["p_value", "term"], ignore_index=True)
