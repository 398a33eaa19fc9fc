"""Reports of a study: a self-contained HTML page with tables and plots.

from sigtune.reports import write_report
write_report(study, "runs/demo/report.html")
"""

from __future__ import annotations

from sigtune.reports._html import write_report

__all__ = ["write_report"]
