"""Cost and usage reports, CSV and DataFrame export, run listings.

Reads stored rows only: never imports the runtime.
"""

from .._money import fmt_money, normalize_money, plural
from ..store import FanoutChild
from ._cost import GROUP_KEYS, Breakdown, CostReport
from ._render import grouped_text, summary_text, text_table
from ._rows import CSV_COLUMNS, CostRow, ModelComparison, Totals
from ._runs import RunList, RunSummary, local_time
from ._when import as_duration, as_time, parse_duration

__all__ = [
    "CSV_COLUMNS",
    "GROUP_KEYS",
    "Breakdown",
    "CostReport",
    "CostRow",
    "FanoutChild",
    "ModelComparison",
    "RunList",
    "RunSummary",
    "Totals",
    "as_duration",
    "as_time",
    "fmt_money",
    "grouped_text",
    "local_time",
    "normalize_money",
    "parse_duration",
    "plural",
    "summary_text",
    "text_table",
]
