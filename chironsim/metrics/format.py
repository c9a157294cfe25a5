"""A compact, fixed-width rendering of the summary table for the terminal.

Latencies in one run span milliseconds (TPOT) to hours (batch E2E), so each cell carries its own
unit instead of the column sharing one; three significant digits are enough to compare policies.
"""

from __future__ import annotations

import math

import pandas as pd

_COLUMNS = (
    ("class", "request_class"),
    ("requests", "requests"),
    ("SLO", "slo_attainment"),
    ("TTFT p50", "ttft_p50"),
    ("TTFT p99", "ttft_p99"),
    ("TPOT p50", "tpot_p50"),
    ("TPOT p99", "tpot_p99"),
    ("E2E p99", "e2e_p99"),
)

MISSING = "-"


def format_duration(seconds: float) -> str:
    """Seconds with a unit that fits: ``0.0123`` → ``"12.3 ms"``, ``4.5`` → ``"4.5 s"``,
    ``900`` → ``"15 min"``, ``7200`` → ``"2 h"``, NaN → ``"-"``."""
    if seconds is None or math.isnan(seconds):
        return MISSING
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 120.0:
        return f"{seconds:.3g} s"
    if seconds < 7200.0:
        return f"{seconds / 60.0:.3g} min"
    return f"{seconds / 3600.0:.3g} h"


def _amount(x: float) -> str:
    """Three significant digits without switching to exponent notation for large values."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _percent(fraction: float) -> str:
    return MISSING if math.isnan(fraction) else f"{fraction * 100:.1f}%"


def _cell(column: str, value: object) -> str:
    if column == "request_class":
        return str(value)
    if column == "requests":
        return str(int(value))
    if column == "slo_attainment":
        return _percent(float(value))
    return format_duration(float(value))


def format_summary(summary: pd.DataFrame) -> str:
    """Render a summary table (see :func:`chironsim.metrics.summary.summarize`) as text.

    One line per class, then one line with the cluster's GPU-hours, cost and goodput, which the
    summary repeats on every row.
    """
    header = [title for title, _ in _COLUMNS]
    body = [[_cell(col, row[col]) for _, col in _COLUMNS] for _, row in summary.iterrows()]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest])

    lines = [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in body)]
    if len(summary):
        first = summary.iloc[0]
        goodput = float(first["goodput_tokens_per_gpu_hour"])
        goodput_txt = MISSING if math.isnan(goodput) else f"{goodput:,.0f} tokens"
        lines.append(
            f"GPU-hours {_amount(float(first['gpu_hours']))}  "
            f"cost ${float(first['cost_usd']):,.2f}  "
            f"goodput/GPU-hour {goodput_txt}"
        )
    return "\n".join(lines)
