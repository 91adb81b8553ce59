"""Plots and a self-contained HTML report of a training run.

Figures are ``matplotlib.figure.Figure`` objects drawn by the Agg canvas, never pyplot: nothing changes the
global backend, so reports work headless and inside notebooks without breaking inline plotting. PNGs are
written atomically. :mod:`bertkit.reports.plots` draws, :mod:`bertkit.reports.html` writes the page and
:mod:`bertkit.reports.run_report` picks the plots of a run's task.
"""

from bertkit.reports.html import write_html_report
from bertkit.reports.plots import (
    expected_calibration_error,
    plot_confusion_matrix,
    plot_history,
    plot_per_label_bars,
    plot_regression_scatter,
    plot_reliability_diagram,
)
from bertkit.reports.run_report import build_run_report

__all__ = [
    "build_run_report",
    "expected_calibration_error",
    "plot_confusion_matrix",
    "plot_history",
    "plot_per_label_bars",
    "plot_regression_scatter",
    "plot_reliability_diagram",
    "write_html_report",
]
