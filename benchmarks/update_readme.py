"""Copy the generated tables in benchmarks/results/ into README.md's results section.

The README's block between `<!-- results:begin -->` and `<!-- results:end -->` is
replaced by every `benchmarks/results/*.md` file, in name order, so the figures there
are always a benchmark's printed output, never typed by hand.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def results_block(results_dir: Path) -> str:
    """The results files as one markdown block, each under its file name."""
    parts = []
    for path in sorted(results_dir.glob("*.md")):
        body = re.sub(r"^#+ ", "#### ", path.read_text().strip(), flags=re.M)
        parts.append(f"#### `benchmarks/results/{path.name}`\n\n{body}")
    return "\n\n".join(parts) if parts else "(no results yet: run `make benchmarks`)"


def update(readme: Path, results_dir: Path) -> None:
    """Rewrite the README's results block in place."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} block to fill.")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{results_block(results_dir)}\n{END}{tail}")


if __name__ == "__main__":
    update(ROOT / "README.md", ROOT / "benchmarks" / "results")
    print("README.md results section updated from benchmarks/results/")
