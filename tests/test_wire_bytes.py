"""Bytes on the wire: every message of a round serialised as Flower sends it, both ways."""

import json

import pytest


@pytest.mark.integration
def test_rounds_record_the_serialised_message_bytes_both_ways(tmp_path):
    from local_grid import simulate_local

    res = simulate_local(3, {"strategy": "fedprune", "dataset": "mnist-mini", "model": "mlp",
                             "num-server-rounds": 2, "fraction-train": 1.0, "min-train-clients": 3,
                             "local-epochs": 1, "max-client-samples": 32}, tmp_path)
    rounds = res["rounds"][1:]
    for r in rounds:
        # the serialised messages hold the payload plus metadata, configs and metrics:
        # a little more than the arrays, never less
        assert r["bytes_up"] < r["wire_bytes_up"] < r["bytes_up"] + 3 * 8192
        assert r["bytes_down"] < r["wire_bytes_down"] < r["bytes_down"] + 3 * 8192
    s = res["summary"]
    assert s["total_wire_bytes_up"] == sum(r["wire_bytes_up"] for r in rounds)
    assert s["total_wire_bytes_down"] == sum(r["wire_bytes_down"] for r in rounds)
    # the summary report shows them
    from fedprune_lab.report import Run, study_table

    data = json.loads((tmp_path / "results.json").read_text())
    table = study_table("s", [Run("s", "fedprune", 0, data)], 0.9)
    assert "wire MB up" in table.splitlines()[0]
    assert f"{s['total_wire_bytes_up'] / 1e6:.1f}" in table.splitlines()[2]


def test_wire_bytes_is_the_protobuf_size_of_the_message():
    import numpy as np
    from flwr.common.serde import message_to_proto

    from fedprune_flwr.strategies.common import payload_bytes, wire_bytes

    from flower_helpers import reply

    msg = reply(3, arrays={"w": np.ones((100, 10), np.float32)}, metrics={"num-examples": 5})
    assert wire_bytes(msg) == message_to_proto(msg).ByteSize()
    assert payload_bytes(msg.content) == 4000 < wire_bytes(msg) < 4000 + 1024
