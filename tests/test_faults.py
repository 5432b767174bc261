"""Fault tolerance through a real Flower grid (Ray simulation): clients that raise,
send wrong shapes, or time out are logged and left out; a round with too few
usable replies is retried (round-retries) or skipped, never aggregated partially."""

from __future__ import annotations

import pytest

from fedprune_lab.simulation import simulate

from faulty_app import RAISES, SLOW, SLOW_S, WRONG_SHAPES, faulty_client  # noqa: F401

pytestmark = pytest.mark.integration

BASE = {"dataset": "mnist-mini", "model": "mlp", "num-server-rounds": 3, "local-epochs": 1,
        "fraction-train": 0.5, "min-train-clients": 3, "min-replies": 3, "seed": 1,
        "strategy": "fedavg"}
FAULTY = {RAISES: "injected failure", WRONG_SHAPES: "shape"}


def _check_rejections(rounds: list[dict]) -> None:
    for r in rounds[1:]:
        for cid, why in r["rejected"].items():
            assert int(cid) in FAULTY, (r["round"], cid, why)
            assert FAULTY[int(cid)] in why, (cid, why)


def test_failed_clients_are_replaced_and_every_round_completes(tmp_path):
    res = simulate(6, {**BASE, "round-retries": 3}, tmp_path, faulty_client)
    rounds = res["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    _check_rejections(rounds)
    assert all(r["clients"] == 3 and not r.get("skipped") for r in rounds[1:])
    retried = [r for r in rounds[1:] if r.get("retries")]
    assert retried, "seed 1 samples a faulty client at least once; expected a retry"
    for r in retried:  # the failed clients' work went to clients not sampled before
        assert set(r["retried_clients"]).isdisjoint(set(map(int, r["rejected"])))
    assert rounds[-1]["accuracy"] > rounds[0]["accuracy"] + 0.2


def test_without_retries_a_short_round_is_skipped_and_the_model_unchanged(tmp_path):
    res = simulate(6, {**BASE, "round-retries": 0}, tmp_path, faulty_client)
    rounds = res["rounds"]
    _check_rejections(rounds)
    skipped = [r for r in rounds[1:] if r.get("skipped")]
    assert skipped, "seed 1 samples a faulty client at least once; expected a skipped round"
    for r in rounds[1:]:
        assert bool(r.get("skipped")) == bool(r["rejected"])
        if r.get("skipped"):  # nothing aggregated: the model is exactly the previous one
            prev = rounds[r["round"] - 1]
            assert r["accuracy"] == prev["accuracy"] and r["loss"] == prev["loss"]


def test_a_client_that_times_out_is_left_out_of_its_round(tmp_path):
    over = {**BASE, "fraction-train": 1.0, "min-replies": 2, "round-timeout": 12.0}
    assert SLOW_S > over["round-timeout"]
    rounds = simulate(3, over, tmp_path, faulty_client)["rounds"]
    assert rounds[1]["clients"] == 3 and rounds[1]["rejected"] == {}
    assert rounds[2]["clients"] == 2 and not rounds[2].get("skipped")
    assert "no reply within round-timeout" in rounds[2]["rejected"][str(SLOW)]
    assert rounds[3]["clients"] == 3  # back in the next round (its late reply is discarded)
