"""The mutation score of the science modules, from a finished `mutmut run` (`make mutation`).

mutmut changes one thing at a time in `metrics`, `targets`, `folds`, `graph`, `model/` and the readers
(an operator, a constant, a string, a call's argument...) and runs the tests that reach the changed
function; a mutant is killed when a test fails. This script reads mutmut's results (`mutants/**.meta`)
and writes the score per module and every surviving mutant, grouped by function, with the reason it
is accepted where one is recorded in `ACCEPTED`.

    python -m benchmarks.mutation --out benchmarks/results/mutation.md
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

from benchmarks import common

MUTANTS = common.REPO / "mutants" / "src"

# mutmut's exit codes (mutmut/stats.py, version 3.8): what happened to each mutant
STATUS_BY_EXIT_CODE = {
    None: "not checked",
    0: "survived",
    1: "killed",
    3: "killed",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    37: "caught by type check",
    -11: "segfault",
    -9: "segfault",
}

# functions whose every surviving mutant was read and found to compute the same result: why
ACCEPTED: dict[str, str] = {
    "spahgc_kedro.metrics.pooled_pcc": "drops `axis=0` from np.concatenate, its default",
    "spahgc_kedro.metrics._depth_residuals": "drops `rcond=None` from lstsq, its default",
    "spahgc_kedro.metrics.finite_mean": "NaN spelled 'NAN'; the mean of no value is NaN either way (with a warning)",
}


def mutant_status(meta_root: Path = MUTANTS) -> dict[str, dict[str, str]]:
    """{module: {mutant name: status}} from mutmut's result files (status: killed, survived, no tests...)."""
    statuses: dict[str, dict[str, str]] = {}
    for meta in sorted(meta_root.rglob("*.py.meta")):
        module = meta.relative_to(meta_root).as_posix().removesuffix(".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            statuses[module] = {name: STATUS_BY_EXIT_CODE.get(code, "suspicious") for name, code in codes.items()}
    return statuses


def score(counts: Counter) -> float:
    """The mutation score of the mutants checked so far: killed (and timed out) over those checked, in percent
    (mutmut's own score also counts the unchecked ones as not killed)."""
    tested = sum(counts.values()) - counts["skipped"] - counts["not checked"]
    return 100.0 * (counts["killed"] + counts["timeout"]) / tested if tested else float("nan")


def percent(value: float) -> str:
    """`85.5%`, or `-` when nothing was checked."""
    return "-" if math.isnan(value) else f"{value:.1f}%"


def function_of(mutant: str) -> str:
    """`spahgc_kedro.graph.x_build__mutmut_3` -> `spahgc_kedro.graph.build` (classes: `Class.method`)."""
    head, _, _ = mutant.rpartition("__mutmut_")
    module, _, name = head.rpartition(".")
    name = name[2:].replace("ǁ", ".") if name.startswith("xǁ") else name.removeprefix("x_")
    return f"{module}.{name}"


def report(statuses: dict[str, dict[str, str]]) -> str:
    """The markdown table per module and the survivors by function."""
    kinds = ("killed", "survived", "no tests", "timeout", "suspicious", "not checked")
    lines = [
        "| module | mutants | " + " | ".join(kinds) + " | score |",
        "|---|---|" + "---|" * len(kinds) + "---|",
    ]
    total: Counter = Counter()
    survivors: dict[str, list[str]] = defaultdict(list)
    for module, by_mutant in statuses.items():
        counts = Counter(by_mutant.values())
        total += counts
        cells = " | ".join(str(counts[kind]) for kind in kinds)
        lines.append(f"| {module} | {len(by_mutant)} | {cells} | {percent(score(counts))} |")
        for mutant, status in by_mutant.items():
            if status in ("survived", "no tests"):
                survivors[function_of(mutant)].append(mutant.rpartition("__mutmut_")[2])
    cells = " | ".join(str(total[kind]) for kind in kinds)
    lines.append(f"| **all** | {sum(total.values())} | {cells} | **{percent(score(total))}** |")
    ordered = sorted(survivors, key=lambda f: (-len(survivors[f]), f))
    accepted = [f"`{f}` {len(survivors[f])} ({ACCEPTED[f]})" for f in ordered if f in ACCEPTED]
    others = [f"`{f}` {len(survivors[f])}" for f in ordered if f not in ACCEPTED]
    lines += [
        "",
        "Surviving mutants (and those no selected test reaches), by function, not yet read: " + ", ".join(others),
    ]
    lines += ["", "Read and found equivalent: " + ("; ".join(accepted) if accepted else "none")]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    statuses = mutant_status()
    if not statuses:
        raise SystemExit("No mutmut results under mutants/: run `make mutation` first.")
    header = [
        "### Mutation testing: how many one-line changes to the science modules the tests catch",
        "",
        "- tool: mutmut 3 (`make mutation`), configured in `pyproject.toml` `[tool.mutmut]`: modules mutated and",
        "  the test files run against each mutant (the fast unit, science-guard and reader tests; real HER2+",
        "  sections from ../shared/data where present)",
        "- score = (killed + timeout) / mutants checked, the target is >= 80%; `no tests` (no selected test",
        "  reaches the function) counts as not killed; `not checked`: the run stopped before these mutants (it",
        "  resumes there), so a module with some unchecked has a partial score",
        f"- machine: {common.cpu_model()}",
        "",
        "",
    ]
    common.write_table("\n".join(header) + report(statuses), args.out)


if __name__ == "__main__":
    main()
