"""The HTML report: CLTM and M heatmaps, analyses, run inventory and config in one offline file.

``data`` reads the results into typed records (a missing key fails with one line naming file and key),
``display`` holds the language order, colours and number formats, ``figures`` the plotly figures, ``html``
the page; ``style.css`` is its style sheet. Nothing here needs torch.
"""

from cltm_pipeline.report.data import Analysis, LearningCurve, MatrixEntry, ResultsError, read_entry
from cltm_pipeline.report.figures import C_CLIP, figures, interval_text, write_figure_html
from cltm_pipeline.report.html import render_report

__all__ = ["MatrixEntry", "Analysis", "LearningCurve", "ResultsError", "read_entry", "figures", "render_report",
           "write_figure_html", "interval_text", "C_CLIP"]
