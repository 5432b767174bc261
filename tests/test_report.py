"""fedprune-summary's contribution plot (fedprune_lab/report.py)."""

from fedprune_lab.report import Run, plot_contributions


def _rounds(score):
    return [{"round": t, "noisy_clients": [1],
             "contributions": {"0": {"score": score, "phi": None, "weight": 0.6},
                               "1": {"score": score, "phi": None, "weight": 0.4}}}
            for t in (1, 2)]


def test_contribution_plot_skips_runs_without_cgsv_scores(tmp_path):
    # FedDST records data-size weights but no scores: no plot, and no crash
    no_cgsv = Run("s", "feddst__noisy", 0, {"rounds": _rounds(None)})
    assert plot_contributions(no_cgsv, tmp_path) is None
    cgsv = Run("s", "fedprune__noisy", 0, {"rounds": _rounds(0.5)})
    path = plot_contributions(cgsv, tmp_path)
    assert path is not None and path.exists() and path.stat().st_size > 0
