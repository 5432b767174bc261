"""The large-model pieces: CIFAR-10 (JPEG) from its zip, Shakespeare by speaker, the
character GPT, and AdamW under masks."""

import io
import os
import zipfile

import numpy as np
import pytest
import torch

from fedprune.config import RunConfig, computed, resolved_optimizer
from fedprune.data import datasets as ds
from fedprune.data import load_dataset, text
from fedprune.data.loader import client_data
from fedprune.data.noise import NoisePlan
from fedprune.data.partition import PartitionSpec, cached_partition_indices
from fedprune.dst import apply_readjustment
from fedprune.masks import layer_budgets, magnitude_masks, prunable_names
from fedprune.models import build_model, num_parameters
from fedprune.training import StepState, TrainConfig, loss_of, optimizer_settings, train


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _jpeg(color, size=(8, 8)):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _image_zip(path, members):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)


# --------------------------------------------------------------------------- CIFAR-10 (JPEG)


def test_image_zip_is_decoded_by_class_and_split(tmp_path):
    classes = ("cat", "dog")
    _image_zip(tmp_path / "a.zip", {
        "train/cat/0000.jpg": _jpeg((250, 0, 0)), "train/cat/0001.jpg": _jpeg((250, 0, 0)),
        "train/dog/0000.jpg": _jpeg((0, 0, 250)), "test/dog/0000.jpg": _jpeg((0, 0, 250)),
        "test/cat/0000.jpg": _jpeg((250, 0, 0)),
    })
    a = ds.read_image_zip(tmp_path / "a.zip", classes)
    assert a["x_train"].shape == (3, 3, 8, 8) and a["x_train"].dtype == np.uint8
    assert a["y_train"].tolist() == [0, 0, 1] and a["y_test"].tolist() == [0, 1]
    # channels first: a red cat, a blue dog
    assert a["x_train"][0, 0].mean() > 200 and a["x_train"][0, 2].mean() < 50
    assert a["x_train"][2, 2].mean() > 200 and a["x_train"][2, 0].mean() < 50
    _image_zip(tmp_path / "b.zip", {"train/bird/0000.jpg": _jpeg((0, 0, 0)),
                                    "test/cat/0000.jpg": _jpeg((0, 0, 0))})
    with pytest.raises(ValueError, match="unexpected member 'train/bird/0000.jpg'"):
        ds.read_image_zip(tmp_path / "b.zip", classes)
    _image_zip(tmp_path / "c.zip", {"train/cat/0000.jpg": _jpeg((0, 0, 0)),
                                    "test/cat/0000.jpg": _jpeg((0, 0, 0), size=(4, 4))})
    a = ds.read_image_zip(tmp_path / "c.zip", classes)  # sizes may differ between splits
    _image_zip(tmp_path / "d.zip", {"train/cat/0000.jpg": _jpeg((0, 0, 0)),
                                    "train/cat/0001.jpg": _jpeg((0, 0, 0), size=(4, 4)),
                                    "test/cat/0000.jpg": _jpeg((0, 0, 0))})
    with pytest.raises(ValueError, match="several sizes"):
        ds.read_image_zip(tmp_path / "d.zip", classes)


def test_decoded_arrays_are_cached_per_version_of_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "src.bin"
    src.write_bytes(b"one")
    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(6, dtype=np.uint8).reshape(2, 3), "y": np.array([1, 2])}

    a = ds._cached_arrays("t", src, build)
    b = ds._cached_arrays("t", src, build)
    assert len(calls) == 1 and np.array_equal(a["x"], b["x"]) and b["y"].tolist() == [1, 2]
    src.write_bytes(b"other")  # a new version of the source: decoded again
    os.utime(src, ns=(1, 1))
    ds._cached_arrays("t", src, build)
    assert len(calls) == 2
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_cifar10_jpeg_names_the_missing_zip(tmp_path):
    load_dataset.cache_clear()
    with pytest.raises(ds.DataNotFoundError, match="CIFAR10-jpeg/cifar10-jpeg.zip"):
        load_dataset("cifar10-jpeg", str(tmp_path))


def test_cifar10_jpeg_holds_all_of_cifar10(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDPRUNE_CACHE_DIR", str(tmp_path))
    load_dataset.cache_clear()
    d = load_dataset("cifar10-jpeg", str(data_dir))
    load_dataset.cache_clear()
    assert d.x_train.shape == (50000, 3, 32, 32) and d.x_test.shape == (10000, 3, 32, 32)
    assert d.y_train.bincount().tolist() == [5000] * 10 and d.y_test.bincount().tolist() == [1000] * 10
    # the channel means of CIFAR-10 (0.491, 0.482, 0.447), within JPEG's error
    means = d.x_train[::10].float().mean((0, 2, 3)) / 255
    assert torch.allclose(means, torch.tensor(ds.CIFAR_STATS[0]), atol=0.01)


# --------------------------------------------------------------------------- Shakespeare

PLAY = """ALPHA:
Speak, speak, the first of many words from alpha.

BETA:
Short.

ALPHA:
And yet a second speech, as long as the first, or nearly.

a stray block without a speaker

ALPHA:
A third one closes the scene for alpha at last.

GAMMA:
Gamma talks and talks, so that gamma has enough characters to count.
"""


def test_shakespeare_by_speaker_windows_and_split():
    a = text.shakespeare_arrays(PLAY, min_chars=40, seq_len=10, stride=3, test_fraction=0.34)
    vocab = a["vocab"]
    assert text.decode(np.arange(1, len(vocab) + 1), vocab) == "".join(sorted(set(PLAY)))
    # ALPHA and GAMMA have >= 40 characters, BETA does not; writers by first appearance
    assert set(a["writers_train"].tolist()) == {0, 1}
    # each label is the character after its window, in that speaker's text
    said = {0: [s for w, s in text.speeches(PLAY) if w == "ALPHA"],
            1: [s for w, s in text.speeches(PLAY) if w == "GAMMA"]}
    for split in ("train", "test"):
        for x, y, w in zip(a[f"x_{split}"], a[f"y_{split}"], a[f"writers_{split}"], strict=True):
            piece = text.decode(x, vocab) + text.decode(y[None], vocab)
            assert any(piece in s or piece in "\n".join(said[int(w)]) for s in said[int(w)])
    # ALPHA's 3 speeches: one is test, two train, and no test window is in a train speech
    train_text = {text.decode(x, vocab) for x, w in zip(a["x_train"], a["writers_train"], strict=True)
                  if w == 0}
    test_text = {text.decode(x, vocab) for x, w in zip(a["x_test"], a["writers_test"], strict=True)
                 if w == 0}
    assert test_text and train_text and not train_text & test_text
    assert a["x_train"].dtype == np.int16 and a["y_train"].dtype == np.int64
    with pytest.raises(ValueError, match="no speaker has 10000"):
        text.shakespeare_arrays(PLAY, min_chars=10000)


def test_shakespeare_clients_test_on_their_own_speakers(data_dir):
    d = load_dataset("shakespeare", str(data_dir))
    assert d.is_tokens and d.vocab_size == d.num_classes == 66 and d.input_shape == (80,)
    assert len(np.unique(d.writers_train)) == 99
    spec = PartitionSpec("natural", 99, seed=0)
    c = client_data(d, spec, 5, test_fraction=0.2, noise=NoisePlan("none", {}), batch_size=16,
                    eval_batch_size=64, seed=0)
    x, y = next(iter(c.train))
    assert x.dtype == torch.int64 and x.shape == (16, 80)
    # the client trains on all of its speaker's training text and tests on its held-out text
    part = cached_partition_indices(d.y_train.numpy(), spec, d.writers_train)[5]
    speakers = np.unique(d.writers_train[part])
    assert len(speakers) == 1 and c.num_train == len(part)
    held = np.isin(d.writers_test, speakers)
    assert 0 < c.test.num_examples == int(held.sum())
    assert torch.equal(c.test.y, d.y_test[torch.from_numpy(held)])


# --------------------------------------------------------------------------- the GPT


def test_gpt_sizes_for_cpu_and_gpu_and_its_prunable_tensors():
    small = build_model("gpt-char", (80,), 66, vocab_size=66, seed=0)
    large = build_model("gpt-char", (80,), 66, vocab_size=66, seed=0, width=4.0)
    assert 0.75e6 < num_parameters(small) < 0.9e6 and num_parameters(large) > 10e6
    names = prunable_names(small)
    assert "tok_embed.weight" in names and "head.weight" in names and "pos_embed" not in names
    assert all(n.endswith(".weight") for n in names) and len(names) == 4 * 6 + 2
    tied = build_model("gpt-char-tied", (80,), 66, vocab_size=66, seed=0)
    # one embedding matrix for input and output: one state entry, one prunable tensor
    assert not any(k.startswith("head") for k in tied.state_dict())
    assert "tok_embed.weight" in prunable_names(tied)
    ids = torch.randint(1, 66, (2, 80))
    assert torch.allclose(tied(ids), tied.hidden(ids)[:, -1] @ tied.tok_embed.weight.T)


def test_gpt_is_causal_and_trains_on_every_position():
    torch.manual_seed(0)
    m = build_model("gpt-char", (12,), 20, vocab_size=20, seed=0, width=0.25).eval()
    ids = torch.randint(1, 20, (2, 12))
    later = ids.clone()
    later[:, 8:] = torch.randint(1, 20, (2, 4))
    h1, h2 = m.hidden(ids), m.hidden(later)
    assert torch.allclose(h1[:, :8], h2[:, :8], atol=1e-6)  # no position sees the future
    assert not torch.allclose(h1[:, 8:], h2[:, 8:])
    assert m(ids).shape == (2, 20)
    y = torch.randint(1, 20, (2,))
    # the training loss scores every position: position i predicts ids[i+1], the last y
    logits = m.logits(m.hidden(ids))
    want = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), torch.cat([ids[:, 1:], y[:, None]], 1).flatten())
    assert torch.allclose(loss_of(m, ids, y), want)
    # a model without training_loss: the plain cross-entropy of its logits
    lin = torch.nn.Linear(3, 4)
    x, t = torch.randn(5, 3), torch.randint(0, 4, (5,))
    assert torch.allclose(loss_of(lin, x, t), torch.nn.functional.cross_entropy(lin(x), t))


# --------------------------------------------------------------------------- AdamW


def test_auto_optimizer_per_model_and_stored_runs_compare_resolved():
    assert resolved_optimizer("auto", "gpt-char") == "adamw"
    assert resolved_optimizer("auto", "vit") == "adamw"
    assert resolved_optimizer("auto", "cnn-mnist") == "sgd"
    assert resolved_optimizer("sgd", "gpt-char") == "sgd"
    # a CNN run stored before the key trained with SGD: the same as "auto" today
    now = computed(RunConfig.from_mapping({"model": "cnn-mnist"}).to_dict())
    assert now["optimizer"] == "sgd"
    assert computed(RunConfig.from_mapping({"model": "vit"}).to_dict())["optimizer"] == "adamw"
    from fedprune_lab.study import drift_between

    cnn = {k: v for k, v in RunConfig.from_mapping({"model": "cnn-mnist"}).to_dict().items()
           if k != "optimizer"}
    assert drift_between(cnn, {"model": "cnn-mnist"}) == []
    vit = {**cnn, "model": "vit"}
    assert drift_between(vit, {"model": "vit"}) == ["optimizer: (not recorded) -> 'adamw'"]
    with pytest.raises(Exception, match="optimizer"):
        RunConfig.from_mapping({"optimizer": "adam"})


def test_masked_adamw_keeps_weights_and_moments_zero_outside_the_mask():
    torch.manual_seed(0)
    m = build_model("gpt-char", (12,), 20, vocab_size=20, seed=0, width=0.25)
    names = prunable_names(m)
    params = dict(m.named_parameters())
    budgets = layer_budgets({k: tuple(params[k].shape) for k in names}, 0.3, "erk")
    masks = {k: v.float() for k, v in magnitude_masks(
        {k: params[k].detach() for k in names}, budgets).items()}
    x = torch.randint(1, 20, (64, 12))
    y = torch.randint(1, 20, (64,))
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    seen: list[StepState] = []
    lrs: list[float] = []

    def on_step(s):
        lrs.append(s.optimizer.param_groups[0]["lr"])
        if s.step == 2:  # a readjustment part-way: moved positions' moments start at zero
            apply_readjustment(s.model, s.optimizer, s.masks, None, 0.3, "random",
                               torch.Generator().manual_seed(0))
        seen.append(s)

    cfg = TrainConfig(epochs=5, lr=3e-3, weight_decay=0.1, **optimizer_settings("adamw"))
    train(m, batches, cfg, masks=masks, on_step=on_step, seed=0)
    opt = seen[-1].optimizer
    assert isinstance(opt, torch.optim.AdamW)
    for k in names:
        off = seen[-1].masks[k] == 0
        state = opt.state[params[k]]
        assert torch.all(params[k][off] == 0), k
        assert torch.all(state["exp_avg"][off] == 0) and torch.all(state["exp_avg_sq"][off] == 0), k
        assert torch.any(state["exp_avg"][~off] != 0), k
    # warm-up: the lr rises linearly over the first 10% of the 20 steps (2 steps), then holds
    assert lrs[0] == pytest.approx(1.5e-3) and lrs[1] == pytest.approx(3e-3)
    assert all(v == pytest.approx(3e-3) for v in lrs[1:])
