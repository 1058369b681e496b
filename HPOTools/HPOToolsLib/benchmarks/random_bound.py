"""`bench random-bound`: Table 2.2 of the thesis, computed exactly (§2.4.1, eq. 2.20–2.22).

Random search without replacement over N configurations of which M = αN are acceptable: the
probability that none of the first n draws is acceptable is P(Y = n) = Π_{k<n} (1 − M/(N − k))
(eq. 2.20), so the probability of having drawn one within n draws is 1 − P(Y = n). The table gives
the smallest n with that probability above p. Thesis values for N = 100 000:
top 1 %: 69 / 298 / 458, top 5 %: 14 / 59 / 90, top 10 %: 7 / 29 / 44 (p > 0.5 / 0.95 / 0.99).
"""

from __future__ import annotations

import numpy as np

THESIS_TABLE = {0.01: (69, 298, 458), 0.05: (14, 59, 90), 0.10: (7, 29, 44)}
PROBABILITIES = (0.5, 0.95, 0.99)


def draws_needed(n_total: int, fraction: float, probability: float) -> int:
    """Smallest n with P(found within n draws) > probability."""
    n_good = int(round(fraction * n_total))
    if n_good < 1:
        raise ValueError(f"top {fraction:.3%} of {n_total} configurations is empty")
    k = np.arange(n_total - n_good + 1)
    with np.errstate(divide="ignore"):     # the last factor is 0: by then a good one is certain
        cumulative_found = -np.expm1(np.cumsum(np.log1p(-n_good / (n_total - k))))   # after k + 1 draws
    return int(np.argmax(cumulative_found > probability)) + 1


def table(n_total: int = 100_000, fractions=(0.01, 0.05, 0.10), probabilities=PROBABILITIES) -> dict:
    return {f: [draws_needed(n_total, f, p) for p in probabilities] for f in fractions}


def configure(parser):
    parser.add_argument("--size", type=int, default=100_000, help="number of configurations N (default 100000)")


def run(args) -> int:
    from .cli import emit

    if args.size < 10:
        raise ValueError(f"--size must be at least 10, got {args.size}")
    computed = table(args.size)
    rows = []
    for fraction, draws in computed.items():
        thesis = THESIS_TABLE.get(fraction) if args.size == 100_000 else None
        rows.append({"top_fraction": fraction, "draws": dict(zip(map(str, PROBABILITIES), draws)),
                     "thesis": dict(zip(map(str, PROBABILITIES), thesis)) if thesis else None,
                     "matches_thesis": list(thesis) == draws if thesis else None})
    lines = [f"Table 2.2: draws needed, N = {args.size}", f"{'':>8} " + " ".join(f"p>{p:<6}" for p in PROBABILITIES)]
    for row in rows:
        cells = " ".join(f"{d:<8}" for d in row["draws"].values())
        check = "" if row["matches_thesis"] is None else ("  (= thesis)" if row["matches_thesis"] else "  (thesis differs)")
        lines.append(f"top {row['top_fraction']:.0%}:".rjust(8) + f" {cells}{check}")
    emit(args, {"bench": "random-bound", "size": args.size, "rows": rows}, "\n".join(lines))
    return 0 if all(r["matches_thesis"] is not False for r in rows) else 1
