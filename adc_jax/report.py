"""Human-readable forms of an evaluation result: a summary line, Markdown tables, sample files.

`result` is the dict `adc_jax.evaluate` writes to `eval/<...>.json`: "scores", "baseline",
"difference_accuracy", "breakdown", "config_name", "step", "decode".
"""

from __future__ import annotations

from typing import Any

from adc_jax.data.eval_split import EvalSplit

# The caption metrics of the tables, in order.
SCORE_COLUMNS = ("BLEU_1", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE", "SPIDEr")


def summary_line(result: dict[str, Any]) -> str:
    s = result["scores"]
    line = (
        f"BLEU-4 {s['BLEU_4']:.3f}  METEOR {s['METEOR']:.3f}  ROUGE-L {s['ROUGE_L']:.3f}  "
        f"CIDEr {s['CIDEr']:.3f}"
    )
    if result.get("difference_accuracy"):
        line += f"  diff-acc {result['difference_accuracy']['exact_set_accuracy']:.3f}"
    line += f"  (baseline CIDEr {result['baseline']['scores']['CIDEr']:.3f})"
    short = {
        "swap_consistency": "swap",
        "identical_pair_rate": "same",
        "distinct_captions": "distinct",
    }
    cells = [
        f"{label} {result['diagnostics'][name]['value']:.3f}"
        for name, label in short.items()
        if (result.get("diagnostics") or {}).get(name, {}).get("value") is not None
    ]
    return line + ("  " + "  ".join(cells) if cells else "")


def _baseline_name(caption: str | dict[str, str], width: int = 60) -> str:
    """'most frequent caption: "..."' (per tier: the tiers' captions, each shortened)."""
    if isinstance(caption, dict):
        if len(caption) != 1:
            return "most frequent answer of each tier"
        caption = next(iter(caption.values()))
    short = caption if len(caption) <= width else caption[: width - 3] + "..."
    return f'most frequent caption: "{short}"'


def _interval(result: dict[str, Any], metric: str) -> str:
    lo_hi = result.get("intervals", {}).get(metric)
    return "" if not lo_hi else f" [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]"


def rescore_summary(result: dict[str, Any]) -> str:
    """The scores of a rescored predictions file, each with its 95% bootstrap interval."""
    lines = [f"{result['predictions_file']}: {result['num_pairs']} pairs"]
    for name, r in [("all", result)] + [
        (f"tier {t}", r) for t, r in sorted(result.get("tiers", {}).items())
    ]:
        s = r["scores"]
        cells = [f"{m} {s[m]:.3f}{_interval(r, m)}" for m in SCORE_COLUMNS if s.get(m) is not None]
        if r.get("difference_accuracy"):
            value = r["difference_accuracy"]["exact_set_accuracy"]
            cells.append(f"diff-acc {value:.3f}{_interval(r, 'difference_accuracy')}")
        lines.append(f"  {name}: " + "  ".join(cells))
    for name, d in (result.get("diagnostics") or {}).items():
        lines.append(f"  {name}: {_diagnostic(d)}")
    for name in (result.get("extra_metrics") or {}).get("scores", {}):
        lines.append(f"  {name}: {_extra(result['extra_metrics'], name)}")
    return "\n".join(lines)


def _diagnostic(d: dict[str, Any]) -> str:
    if d.get("value") is None:
        return f"n/a ({d.get('reason', '')})"
    lo, hi = d["interval"]
    return f"{d['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def _extra(extra: dict[str, Any], name: str) -> str:
    value = extra["scores"].get(name)
    if value is None:
        return f"n/a ({extra['notes'].get(name, '')})"
    lo, hi = extra["intervals"][name]
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def diagnostics_table(result: dict[str, Any]) -> str:
    """The diagnostics (and aac-metrics' scores, if any) as a Markdown table with intervals."""
    rows = [[name, _diagnostic(d)] for name, d in (result.get("diagnostics") or {}).items()]
    extra = result.get("extra_metrics") or {}
    rows += [[name, _extra(extra, name)] for name in extra.get("scores", {})]
    return _table(["diagnostic", "value [95% interval]"], rows)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown_table(result: dict[str, Any]) -> str:
    """The model's and the baseline's scores as one Markdown table."""
    has_diff = result.get("difference_accuracy") is not None
    header = ["system", *SCORE_COLUMNS] + (["diff. acc."] if has_diff else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(name, r):
        cells = [name] + [_fmt(r["scores"].get(c)) for c in SCORE_COLUMNS]
        if has_diff:
            cells.append(_fmt(r["difference_accuracy"]["exact_set_accuracy"]))
        return "| " + " | ".join(cells) + " |"

    lines.append(
        row(f"{result['config_name']} (step {result['step']}, {result['decode']})", result)
    )
    lines.append(row(_baseline_name(result["baseline"]["caption"]), result["baseline"]))
    for tier, r in sorted(result.get("tiers", {}).items()):
        lines.append(row(f"tier {tier}: model ({r['num_pairs']} pairs)", r))
        lines.append(row(f"tier {tier}: {_baseline_name(r['baseline']['caption'])}", r["baseline"]))
    notes = result["scores"].get("notes", {})
    if notes.get("SPICE") and result["scores"].get("SPICE") is None:
        lines.append(f"\nSPICE/SPIDEr n/a: {notes['SPICE']}")
    if result.get("diagnostics") or result.get("extra_metrics"):
        lines.append(
            "\nDiagnostics (adc_jax.metrics.diagnostics: swapped pairs, (clip 1, clip 1) "
            "pairs, distinct predictions, discriminability; chance discriminability is 0.5):\n\n"
            + diagnostics_table(result)
        )
    if result.get("breakdown"):
        lines.append("\n" + breakdown_tables(result["breakdown"]))
    return "\n".join(lines)


def breakdown_tables(bd: dict[str, Any]) -> str:
    """The breakdowns of `breakdown()` as Markdown tables (model vs most-frequent baseline)."""
    sections = []
    if bd.get("by_operation"):
        header = [
            "operation",
            "pairs",
            "CIDEr",
            "CIDEr (baseline)",
            "BLEU-4",
            "BLEU-4 (baseline)",
            "exact acc.",
            "exact acc. (baseline)",
            "precision",
            "recall",
            "F1",
        ]
        rows = []
        for op, g in bd["by_operation"].items():
            m, b = g["model"], g["baseline"]
            rows.append(
                [
                    op,
                    str(g["num_pairs"]),
                    _fmt(m["CIDEr"]),
                    _fmt(b["CIDEr"]),
                    _fmt(m["BLEU_4"]),
                    _fmt(b["BLEU_4"]),
                    _fmt(m.get("exact_set_accuracy")),
                    _fmt(b.get("exact_set_accuracy")),
                    _fmt(g.get("precision")),
                    _fmt(g.get("recall")),
                    _fmt(g.get("f1")),
                ]
            )
        sections.append(
            "Per operation (pairs whose labelled edits contain it; precision/recall/F1 "
            "of that operation's edits over the whole split):\n\n" + _table(header, rows)
        )
    for key, title, first in (
        (
            "by_keyword",
            "By reference keyword (pairs whose references use one of the group's "
            "words; see adc_jax.metrics.breakdown.KEYWORD_GROUPS):",
            "keywords",
        ),
        ("by_scene", "By scene:", "scene"),
    ):
        if not bd.get(key):
            continue
        header = [first, "pairs", "CIDEr", "CIDEr (baseline)", "BLEU-4", "BLEU-4 (baseline)"]
        rows = [
            [
                name,
                str(g["num_pairs"]),
                _fmt(g["model"]["CIDEr"]),
                _fmt(g["baseline"]["CIDEr"]),
                _fmt(g["model"]["BLEU_4"]),
                _fmt(g["baseline"]["BLEU_4"]),
            ]
            for name, g in bd[key].items()
        ]
        sections.append(title + "\n\n" + _table(header, rows))
    return "\n\n".join(sections)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_samples(path: str, predictions: dict[str, str], split: EvalSplit, num: int) -> None:
    """Writes the first `num` predictions with their references (and labels)."""
    with open(path, "w") as f:
        for key, refs, edits in list(zip(split.keys, split.references, split.edits, strict=True))[
            :num
        ]:
            f.write(f"[{key}]\n  predicted: {predictions.get(key, '')}\n")
            for r in refs:
                f.write(f"  reference: {r}\n")
            if edits:
                f.write("  edits:     " + ", ".join(f"{o} {c}" for o, c in edits) + "\n")
            f.write("\n")


# ---------------------------------------------------------------------------------- ADIFF table

# ADIFF's leaderboard columns: subset and tier.
ADIFF_COLUMNS = (("cld", 1), ("cld", 2), ("cld", 3), ("acd", 1), ("acd", 2), ("acd", 3))
# ADIFF's published greedy-decoding SPICE (x100) per column (Deshmukh et al., ICLR 2025): a
# reference row, printed as theirs, beside ours.
ADIFF_PUBLISHED_SPICE = {
    ("cld", 1): 11.85,
    ("cld", 2): 23.15,
    ("cld", 3): 16.67,
    ("acd", 1): 12.68,
    ("acd", 2): 22.16,
    ("acd", 3): 17.07,
}
ADIFF_REFERENCE_ROW = "ADIFF, published (Deshmukh et al., 2025; greedy; theirs, not run here)"


def adiff_cells(result: dict[str, Any], metric: str, *, baseline: bool = False) -> dict:
    """(subset, tier) -> metric x 100 of one ADIFF eval result (its baseline's with baseline)."""
    cells = {}
    for tier, r in result.get("tiers", {}).items():
        scores = (r["baseline"] if baseline else r)["scores"]
        value = scores.get(metric)
        cells[(result["subset"], int(tier))] = None if value is None else 100.0 * value
    return cells


def adiff_table(systems: list[tuple[str, list[dict[str, Any]]]], metric: str = "SPICE") -> str:
    """A Markdown table laid out like ADIFF's leaderboard for one metric (x 100).

    Args:
      systems: (row name, eval results of that system: one per subset it was run on) pairs.
      metric: a key of the results' "scores" (SPICE, SPIDEr, CIDEr, BLEU_4, METEOR, ROUGE_L).

    Rows: each system; the most-frequent-answer baseline of each tier (from the first result
    that scored the column); and, for SPICE, ADIFF's published figures, labelled as theirs.
    Columns: CLD-1..3, ACD-1..3 ("-" where nothing was run, "n/a" where the metric could not be
    computed, e.g. SPICE without Stanford CoreNLP).
    """
    header = ["system"] + [f"{subset.upper()}-{tier}" for subset, tier in ADIFF_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(name: str, cells: dict, present: set) -> str:
        out = []
        for column in ADIFF_COLUMNS:
            if column not in present:
                out.append("-")
            else:
                out.append("n/a" if cells.get(column) is None else f"{cells[column]:.2f}")
        return "| " + " | ".join([name, *out]) + " |"

    baseline: dict = {}
    baseline_present: set = set()
    for name, results in systems:
        cells: dict = {}
        for result in results:
            cells.update(adiff_cells(result, metric))
            for column, value in adiff_cells(result, metric, baseline=True).items():
                if column not in baseline_present:
                    baseline[column] = value
                    baseline_present.add(column)
        lines.append(row(name, cells, set(cells)))
    if baseline_present:
        lines.append(row("most frequent training answer of the tier", baseline, baseline_present))
    if metric == "SPICE":
        lines.append(row(ADIFF_REFERENCE_ROW, ADIFF_PUBLISHED_SPICE, set(ADIFF_COLUMNS)))
    return "\n".join(lines)
