"""The report's loss curve shows what a method recorded, also when its losses are not the usual ones."""
from __future__ import annotations

import warnings

from genloop.evaluation.report import loss_curve_png


def test_a_history_without_the_usual_columns_plots_what_it_recorded_instead_of_an_empty_frame():
    gan_columns = ("d_loss", "g_loss")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns on a legend with nothing in it
        falling = loss_curve_png({"epoch": [1, 2, 3], "mmd_loss": [3.0, 2.0, 1.0]}, gan_columns, "gan")
        rising = loss_curve_png({"epoch": [1, 2, 3], "mmd_loss": [1.0, 2.0, 3.0]}, gan_columns, "gan")
    assert falling[:8] == b"\x89PNG\r\n\x1a\n" and falling != rising
