"""Cost and usage reports, CSV and DataFrame export."""

from ._cost import CSV_COLUMNS, CostReport, CostRow

__all__ = ["CSV_COLUMNS", "CostReport", "CostRow"]
