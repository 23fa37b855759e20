"""The metrics table printed at the end of `genloop run` and `genloop evaluate`."""
from __future__ import annotations

from genloop.evaluation.summary import metrics_table


def test_rows_only_some_models_have_show_a_dash_for_the_others():
    metrics = {
        "vae": {"fid": 12.5, "fid_real_floor": 4.0, "mia_distance_auc": 0.61, "epsilon": 3.2},
        "gan": {"fid": 7.25, "mia_distance_auc": 0.58, "label_fidelity": 0.93},
    }
    lines = {line.split()[0]: line.split()[1:] for line in metrics_table(metrics).splitlines()[2:]}
    assert lines["fid"] == ["12.5", "7.25", "4"]
    assert lines["mia_distance_auc"] == ["0.61", "0.58", "-"]
    assert lines["label_fidelity"] == ["-", "0.93", "-"]
    assert lines["epsilon"] == ["3.2", "-", "-"]
    assert "recall" not in lines  # no model has it
