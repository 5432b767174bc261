"""Model registry: one builder signature, ``(input_shape, num_classes, width) -> nn.Module``.

==============  ==============================================================
name            model
==============  ==============================================================
``cnn-mnist``   the 28x28 CNN of the federated-pruning literature (FedDST,
                PruneFL, LotteryFL): conv 5x5 1->10, max-pool 3/1, conv 5x5
                10->20, max-pool 3/1, linear 5120->50, linear 50->C.
                261,840 parameters for C = 10.
``cnn-cifar10`` FedDST's CIFAR-10 CNN (LeNet-like): conv 5x5 3->6, pool 3/1,
                conv 5x5 6->16, pool 3/1, linear 6400->120->84->C.
``resnet18``    torchvision's ResNet-18 adapted to 32x32 inputs: 3x3 stride-1
                stem, no max-pool (the usual CIFAR variant).
``mlp``         flatten -> 200 -> 200 -> C with ReLU (McMahan et al.'s 2NN).
``vit``         a small Vision Transformer for 28x28 / 32x32 images: 4x4
                patches (a strided conv), class token, learned positions,
                4 pre-norm blocks of dim 64, 4 heads, MLP 128 (139,018
                parameters on 28x28x1 with C = 10).
``bert-tiny``   a BERT-style encoder for token sequences ``(L,)``: token
                embedding (id 0 = padding, masked out of attention), learned
                positions, 2 pre-norm blocks of dim 64, 4 heads, MLP 128,
                mean pooling over real tokens. A token model: it needs the
                data set's ``vocab_size``. (Named for its size; it is not the
                published BERT-Tiny, which has dim 128 and 2 heads.)
==============  ==============================================================

``width`` scales channels / hidden units (for the transformers: the model
dimension and the MLP; the head count stays 4).

Token models are registered with ``register_model(name, tokens=True)`` and
receive the vocabulary size as a keyword, ``builder(input_shape, num_classes,
width, vocab_size=V)``; :func:`build_model` and :func:`model_from_config` take
``vocab_size`` and pass it on (:func:`model_from_config` reads it from the
run's data set when the caller does not give it). Image builders are
unchanged.

The transformers write attention with explicit ``nn.Linear`` projections (q,
k, v, out) rather than ``nn.MultiheadAttention``, so every projection is a
``Linear`` module: prunable by :func:`fedprune.masks.prunable_names` and
counted by :func:`fedprune.flops.layer_macs`. The class token and the
position embeddings are free ``nn.Parameter`` tensors and stay dense.

The reference FedDST code puts a softmax in ``forward`` and then applies
cross-entropy on top (a double softmax); the models here return logits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from fedprune.config import RunConfig

Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, Builder] = {}
_TOKEN_MODELS: set[str] = set()


def register_model(name: str, *, tokens: bool = False) -> Callable[[Builder], Builder]:
    """Decorator adding a builder ``(input_shape, num_classes, width) -> nn.Module``.

    With ``tokens=True`` the model takes int64 token ids of shape ``(B, L)``,
    its ``input_shape`` is ``(L,)``, and the builder is also called with the
    keyword ``vocab_size``.
    """

    def deco(fn: Builder) -> Builder:
        _REGISTRY[name] = fn
        if tokens:
            _TOKEN_MODELS.add(name)
        else:
            _TOKEN_MODELS.discard(name)
        return fn

    return deco


def model_names() -> list[str]:
    """All registered model names."""
    return sorted(_REGISTRY)


def is_token_model(name: str) -> bool:
    """Whether the registered model ``name`` takes token ids (and needs ``vocab_size``)."""
    return name in _TOKEN_MODELS


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, seed: int | None = None,
    width: float = 1.0, *, vocab_size: int | None = None,
) -> nn.Module:
    """Build a registered model; with ``seed`` its initial weights are reproducible.

    ``width`` scales the channels and hidden units (a narrower model of the
    same family, e.g. the "small dense" baseline); resnet18 supports 1.0 only.
    ``vocab_size`` is required by token models (:func:`is_token_model`) and
    must be None for the others.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(model_names())}")
    if not 0 < width <= 4:
        raise ValueError(f"model width must be in (0, 4], got {width}")
    kwargs: dict[str, int] = {}
    if is_token_model(name):
        if vocab_size is None:
            raise ValueError(
                f"model {name!r} takes token ids and needs vocab_size (the token data set's "
                "vocab_size, e.g. dataset 'tokens-synthetic' or 'tokens-npz')"
            )
        kwargs["vocab_size"] = int(vocab_size)
    elif vocab_size is not None:
        raise ValueError(
            f"model {name!r} takes images, not token ids (vocab_size={vocab_size} given); "
            f"token models: {', '.join(sorted(_TOKEN_MODELS))}"
        )
    if seed is None:
        return _REGISTRY[name](input_shape, num_classes, width, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _REGISTRY[name](input_shape, num_classes, width, **kwargs)


def num_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def matched_width(
    name: str, input_shape: tuple[int, ...], num_classes: int, target_params: int, *,
    vocab_size: int | None = None,
) -> float:
    """The width (multiple of 1/100 in (0, 1]) whose model is closest to ``target_params``."""
    best, best_gap = 1.0, None
    for w in (i / 100 for i in range(1, 101)):
        model = build_model(name, input_shape, num_classes, width=w, vocab_size=vocab_size)
        gap = abs(num_parameters(model) - target_params)
        if best_gap is None or gap < best_gap:
            best, best_gap = w, gap
    return best


def _scaled(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


def max_pool_s1(x: torch.Tensor, k: int) -> torch.Tensor:
    """``nn.functional.max_pool2d(x, k, stride=1)`` with the same values and gradients, faster.

    PyTorch's CPU kernel for an NCHW input is slow for small stride-1 windows (on
    this project's 2-core machine a 3x3 pool took a quarter of a cnn-mnist training
    step and half of an evaluation; ``benchmarks/pool_time.py``). When autograd
    records, the pool runs on a channels-last copy, whose kernel is 2-4x faster and
    picks the same argmax (the first in the window), and the result is made NCHW
    again: values, indices and the input gradient are bit-for-bit the native ones
    (the gradient of each input element is summed over the same windows in the same
    order), so training is unchanged. Without autograd the maximum is taken over
    ``k`` shifted slices along each axis (max is exact, so the values are the same),
    about 10x faster than the native kernel on an evaluation batch.
    """
    if min(x.shape[-2:]) < k:  # too small for one window: the native error
        return nn.functional.max_pool2d(x, k, stride=1)
    if torch.is_grad_enabled() and x.requires_grad:
        cl = x.contiguous(memory_format=torch.channels_last)
        return nn.functional.max_pool2d(cl, k, stride=1).contiguous()
    w = x.shape[-1] - k + 1
    x = functools.reduce(torch.maximum, (x[..., i:i + w] for i in range(k)))
    h = x.shape[-2] - k + 1
    return functools.reduce(torch.maximum, (x[..., i:i + h, :] for i in range(k)))


class SmallCNN(nn.Module):
    """Two 5x5 convolutions with stride-1 3x3 max-pools, then fully connected layers."""

    def __init__(
        self, input_shape: tuple[int, int, int], num_classes: int, channels: tuple[int, int],
        hidden: tuple[int, ...],
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        self.conv1 = nn.Conv2d(c, channels[0], 5)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 5)
        # each conv 5x5 (valid) removes 4 pixels, each pool 3/1 removes 2
        flat = channels[1] * (h - 12) * (w - 12)
        dims = (flat, *hidden, num_classes)
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(max_pool_s1(self.conv1(x), 3))  # (B, c1, H-6, W-6)
        x = torch.relu(max_pool_s1(self.conv2(x), 3))  # (B, c2, H-12, W-12)
        x = x.flatten(1)
        for fc in self.fcs[:-1]:
            x = torch.relu(fc(x))
        return self.fcs[-1](x)  # logits (B, C)


@register_model("cnn-mnist")
def cnn_mnist(input_shape: tuple[int, int, int], num_classes: int, width: float = 1.0) -> nn.Module:
    """FedDST / LotteryFL MNIST CNN (262k parameters on 28x28x1, 10 classes)."""
    return SmallCNN(input_shape, num_classes, channels=(_scaled(10, width), _scaled(20, width)),
                    hidden=(_scaled(50, width),))


@register_model("cnn-cifar10")
def cnn_cifar10(input_shape: tuple[int, int, int], num_classes: int, width: float = 1.0) -> nn.Module:
    """FedDST's CIFAR-10 CNN (LeNet-like, 786k parameters on 32x32x3)."""
    return SmallCNN(input_shape, num_classes, channels=(_scaled(6, width), _scaled(16, width)),
                    hidden=(_scaled(120, width), _scaled(84, width)))


@register_model("mlp")
def mlp(input_shape: tuple[int, int, int], num_classes: int, width: float = 1.0) -> nn.Module:
    """Two hidden layers of 200 units (McMahan et al.'s MNIST 2NN)."""
    c, h, w = input_shape
    u = _scaled(200, width)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(c * h * w, u), nn.ReLU(), nn.Linear(u, u), nn.ReLU(),
        nn.Linear(u, num_classes),
    )


@register_model("resnet18")
def resnet18(input_shape: tuple[int, int, int], num_classes: int, width: float = 1.0) -> nn.Module:
    """torchvision ResNet-18 with a 3x3 stride-1 stem and no max-pool, for 32x32 inputs."""
    from torchvision.models import resnet18 as tv_resnet18

    if width != 1.0:
        raise ValueError("resnet18 has fixed widths; model-width must be 1.0")
    net = tv_resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


# --------------------------------------------------------------------------- transformers


class SelfAttention(nn.Module):
    """Multi-head self-attention with explicit ``nn.Linear`` q, k, v and output projections.

    Parameters
    ----------
    dim : model dimension (divisible by ``heads``)
    heads : number of attention heads
    """

    def __init__(self, dim: int, heads: int, causal: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.causal = heads, causal
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, T, D); ``key_mask`` (B, T) bool, True where a token may be attended to."""
        b, t, d = x.shape
        h = self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, h, d // h).transpose(1, 2)  # (B, h, T, D/h)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = (q @ k.transpose(-2, -1)) * (d // h) ** -0.5  # (B, h, T, T)
        if key_mask is not None:
            # a large finite negative, not -inf: a row with no valid key stays finite
            scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        if self.causal:  # position i attends to positions <= i only
            future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(future, torch.finfo(scores.dtype).min)
        att = scores.softmax(dim=-1) @ v  # (B, h, T, D/h)
        return self.out(att.transpose(1, 2).reshape(b, t, d))


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, dim: int, heads: int, hidden: int, causal: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, causal)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, T, D) -> (B, T, D)."""
        x = x + self.attn(self.norm1(x), key_mask)
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))


def _transformer_dims(width: float, dim: int, heads: int, mlp_ratio: float) -> tuple[int, int]:
    """(model dim, MLP hidden) at ``width``: the dim stays a multiple of ``heads``."""
    head_dim = max(1, int(round(dim * width / heads)))
    return heads * head_dim, _scaled(int(round(dim * mlp_ratio)), width)


class ViT(nn.Module):
    """A small Vision Transformer (Dosovitskiy et al., 2021) for low-resolution images.

    Patches ``patch x patch`` are embedded by a strided ``nn.Conv2d``; a
    learned class token is prepended and learned position embeddings added;
    ``depth`` pre-norm encoder blocks follow; the class token's final
    (layer-normalised) state feeds a linear head.
    """

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, *, dim: int = 64, depth: int = 4,
        heads: int = 4, hidden: int = 128, patch: int = 4,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"vit takes images (C, H, W), got input_shape {tuple(input_shape)}")
        c, h, w = input_shape
        if h % patch or w % patch:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
        n = (h // patch) * (w // patch)
        self.patch_embed = nn.Conv2d(c, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> logits (B, num_classes)."""
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


def token_embeddings(vocab_size: int, seq_len: int, dim: int) -> tuple[nn.Embedding, nn.Parameter]:
    """A token embedding (N(0, 0.02), the padding row :data:`fedprune.data.tokens.PAD_ID`
    zero) and learned position embeddings (truncated N(0, 0.02)), initialised in that order."""
    tok = nn.Embedding(vocab_size, dim, padding_idx=0)
    nn.init.normal_(tok.weight, std=0.02)
    with torch.no_grad():
        tok.weight[0].zero_()
    pos = nn.Parameter(torch.zeros(1, seq_len, dim))
    nn.init.trunc_normal_(pos, std=0.02)
    return tok, pos


class TextEncoder(nn.Module):
    """A BERT-style encoder for sequence classification over token ids.

    Token embedding (``nn.Embedding``; id :data:`PAD_ID` is padding) plus
    learned position embeddings, ``depth`` pre-norm encoder blocks in which
    padding is masked out of attention, a final LayerNorm, mean pooling over
    the non-padding positions, and a linear head. Inputs shorter than the
    built length are accepted (the first positions are used).
    """

    PAD_ID = 0

    def __init__(
        self, seq_len: int, vocab_size: int, num_classes: int, *, dim: int = 64, depth: int = 2,
        heads: int = 4, hidden: int = 128,
    ) -> None:
        super().__init__()
        self.tok_embed, self.pos_embed = token_embeddings(vocab_size, seq_len, dim)
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) -> logits (B, num_classes)."""
        ids = ids.long()
        if ids.shape[1] > self.pos_embed.shape[1]:
            raise ValueError(f"sequence length {ids.shape[1]} exceeds the model's {self.pos_embed.shape[1]}")
        keep = ids != self.PAD_ID  # (B, L)
        x = self.tok_embed(ids) + self.pos_embed[:, : ids.shape[1]]
        for block in self.blocks:
            x = block(x, keep)
        x = self.norm(x)
        weight = keep.unsqueeze(-1).to(x.dtype)
        return self.head((x * weight).sum(1) / weight.sum(1).clamp(min=1.0))


class CausalLM(nn.Module):
    """A GPT-style causal transformer that predicts the token after a sequence.

    Token embedding (id :data:`TextEncoder.PAD_ID` is padding) plus learned
    position embeddings, ``depth`` pre-norm blocks with causal self-attention
    (position i sees positions <= i), a final LayerNorm and a linear head on the
    last position: logits of the next token, so the model fits the
    classification interface of every strategy (LEAF's next-character task).
    Training scores every position (:meth:`training_loss`), as a GPT is trained.
    With ``tie`` the logits use the token embedding matrix, so there is no head
    tensor (``num_classes`` must equal ``vocab_size``): one prunable tensor, one
    state entry, and its mask prunes both uses.
    """

    def __init__(
        self, seq_len: int, vocab_size: int, num_classes: int, *, dim: int = 128, depth: int = 4,
        heads: int = 4, hidden: int = 512, tie: bool = False,
    ) -> None:
        super().__init__()
        self.tok_embed, self.pos_embed = token_embeddings(vocab_size, seq_len, dim)
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads, hidden, causal=True)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.tied = tie
        if tie:  # no head of its own: the logits use the embedding matrix (one state entry)
            if num_classes != vocab_size:
                raise ValueError(f"a tied head needs num_classes == vocab_size, got "
                                 f"{num_classes} and {vocab_size}")
        else:
            self.head = nn.Linear(dim, num_classes, bias=False)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """States (..., D) -> logits (..., num_classes)."""
        if self.tied:
            return nn.functional.linear(h, self.tok_embed.weight)
        return self.head(h)

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) -> the final normalised states of every position (B, L, D)."""
        ids = ids.long()
        if ids.shape[1] > self.pos_embed.shape[1]:
            raise ValueError(f"sequence length {ids.shape[1]} exceeds the model's {self.pos_embed.shape[1]}")
        x = self.tok_embed(ids) + self.pos_embed[:, : ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) -> logits of the token after position L (B, num_classes)."""
        return self.logits(self.hidden(ids)[:, -1])

    def training_loss(self, ids: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy at every position, as a GPT is trained: position i
        predicts ``ids[i + 1]`` and the last one ``y`` (the example's label); the
        same compute as the last position alone, ``L`` times the targets. Padding
        targets (id 0) are not scored."""
        logits = self.logits(self.hidden(ids)).float()  # (B, L, C)
        targets = torch.cat([ids[:, 1:].long(), y.long()[:, None]], dim=1)
        return nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                           ignore_index=TextEncoder.PAD_ID)


@register_model("vit")
def vit(input_shape: tuple[int, ...], num_classes: int, width: float = 1.0) -> nn.Module:
    """Small ViT: 4x4 patches, dim 64 x width, depth 4, 4 heads, MLP ratio 2."""
    dim, hidden = _transformer_dims(width, 64, 4, 2.0)
    return ViT(input_shape, num_classes, dim=dim, depth=4, heads=4, hidden=hidden, patch=4)


@register_model("bert-tiny", tokens=True)
def bert_tiny(
    input_shape: tuple[int, ...], num_classes: int, width: float = 1.0, *, vocab_size: int
) -> nn.Module:
    """BERT-style encoder: dim 64 x width, depth 2, 4 heads, MLP ratio 2, mean pooling."""
    if len(input_shape) != 1:
        raise ValueError(f"bert-tiny takes token sequences (L,), got input_shape {tuple(input_shape)}")
    dim, hidden = _transformer_dims(width, 64, 4, 2.0)
    return TextEncoder(int(input_shape[0]), vocab_size, num_classes, dim=dim, depth=2, heads=4,
                       hidden=hidden)


def _gpt(input_shape: tuple[int, ...], num_classes: int, width: float, vocab_size: int,
         tie: bool) -> nn.Module:
    if len(input_shape) != 1:
        raise ValueError(f"gpt-char takes token sequences (L,), got input_shape {tuple(input_shape)}")
    dim, hidden = _transformer_dims(width, 128, 4, 4.0)
    return CausalLM(int(input_shape[0]), vocab_size, num_classes, dim=dim, depth=4, heads=4,
                    hidden=hidden, tie=tie)


@register_model("gpt-char", tokens=True)
def gpt_char(
    input_shape: tuple[int, ...], num_classes: int, width: float = 1.0, *, vocab_size: int
) -> nn.Module:
    """Character GPT: dim 128 x width, depth 4, 4 heads, MLP ratio 4 (0.8 M parameters on
    Shakespeare's 80-character windows; ``model-width = 4``: 12.6 M)."""
    return _gpt(input_shape, num_classes, width, vocab_size, tie=False)


@register_model("gpt-char-tied", tokens=True)
def gpt_char_tied(
    input_shape: tuple[int, ...], num_classes: int, width: float = 1.0, *, vocab_size: int
) -> nn.Module:
    """``gpt-char`` with the head tied to the token embedding."""
    return _gpt(input_shape, num_classes, width, vocab_size, tie=True)


@functools.lru_cache(maxsize=16)
def _small_dense_width(
    name: str, input_shape: tuple[int, ...], num_classes: int, density: float,
    distribution: str, vocab_size: int | None = None,
) -> float:
    from fedprune.masks import layer_budgets, prunable_names  # masks does not import models

    full = build_model(name, input_shape, num_classes, vocab_size=vocab_size)
    names = set(prunable_names(full))
    params = dict(full.named_parameters())
    kept = sum(layer_budgets({k: tuple(params[k].shape) for k in names}, density, distribution).values())
    target = kept + sum(p.numel() for k, p in params.items() if k not in names)
    return matched_width(name, input_shape, num_classes, target, vocab_size=vocab_size)


def model_from_config(
    cfg: RunConfig, input_shape: tuple[int, ...], num_classes: int, *,
    vocab_size: int | None = None,
) -> nn.Module:
    """The run's model, as both the ServerApp and every ClientApp build it.

    ``model-width`` scales it; for ``strategy = "small-dense"`` with the default
    width, the width is chosen so that the dense model has as many parameters
    as FedPrune keeps at ``sparsity`` (kept prunable weights + the dense rest).

    For a token model (:func:`is_token_model`), ``vocab_size`` is the data
    set's (``ImageData.vocab_size``); when not given it is read from the run's
    data set (``load_dataset`` is cached, so this costs nothing after the
    first call).
    """
    if is_token_model(cfg.model) and vocab_size is None:
        from fedprune.data import load_dataset  # deferred: models does not need data otherwise

        data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
        if data.vocab_size is None:
            raise ValueError(
                f"model {cfg.model!r} takes token ids but dataset {cfg.dataset!r} holds images; "
                "use a token data set such as 'tokens-synthetic' or 'tokens-npz'"
            )
        vocab_size = data.vocab_size
    width = cfg.model_width
    if cfg.strategy == "small-dense" and width == 1.0:
        width = _small_dense_width(cfg.model, tuple(input_shape), num_classes,
                                   1.0 - cfg.sparsity, cfg.density_distribution, vocab_size)
    return build_model(cfg.model, input_shape, num_classes, seed=cfg.seed, width=width,
                       vocab_size=vocab_size)
