"""fedprune_lab/readjust_probe.py: the cost of readjustment rounds against a fixed mask."""

import pytest

from fedprune_lab.readjust_probe import probe, readjust_rounds


def _rounds(accs, alphas):
    return [{"round": t, "accuracy": a, "alpha": al}
            for t, (a, al) in enumerate(zip(accs, alphas, strict=True))]


def test_the_probe_compares_readjustment_rounds_with_the_fixed_mask():
    alphas = [None, 0.0, 0.1, 0.0, 0.0]
    run = {"seed-0": _rounds([0.1, 0.3, 0.3, 0.5, 0.6], alphas),
           "seed-1": _rounds([0.1, 0.2, 0.4, 0.4, 0.6], alphas)}
    ref = {"seed-0": _rounds([0.1, 0.3, 0.5, 0.6, 0.7], [None] + [0.0] * 4),
           "seed-1": _rounds([0.1, 0.2, 0.4, 0.6, 0.7], [None] + [0.0] * 4),
           "seed-9": _rounds([0.1] * 5, [None] + [0.0] * 4)}
    assert readjust_rounds(run["seed-0"]) == [2]
    ((t, gain, ref_gain, gap),) = probe(run, ref)
    assert t == 2 and gain == pytest.approx(0.1) and ref_gain == pytest.approx(0.2)
    assert gap == pytest.approx(((0.5 - 0.6) + (0.4 - 0.6)) / 2)
    with pytest.raises(ValueError, match="share no"):
        probe(run, {"seed-5": ref["seed-9"]})
