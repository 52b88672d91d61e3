"""Large contrastive batches on few devices: the gradient cache (Gao et al. 2021, "Scaling Deep
Contrastive Learning Batch Size under Memory Limited Setup").

The contrastive loss couples every view of the batch, so the batch cannot simply be split into
accumulation steps. It only needs the projections z, though, which are small:
  1. forward every chunk of ``chunk_size`` views without storing activations, keep z;
  2. compute the loss and its gradient with respect to all of z (cheap: [V*b, D]);
  3. replay each chunk's forward with activations and back-propagate its slice of that gradient.
Parameter gradients equal those of the one-pass step for a model whose output for a view does not
depend on the other views in its forward batch. BatchNorm does depend on them: under chunking,
BN statistics are those of the chunk (of chunk i on every rank with global BN), not of the batch,
so the step is the one-pass step of a model with BN over ``chunk_size`` views ("ghost" batches).

Chunk membership is a keyed random permutation of the global batch's views (:func:`chunk_order`),
not the view-major order of the batch. Split view-major, chunk i would hold view 0 of a set of
samples S and a twin chunk view 1 of the same S: both chunks' BN statistics would describe exactly
the samples their positives come from, the shortcut that SimCLR's global BN removes (paper
section 3, "Global BN"). Permuted, a chunk mixes views and samples, and a view's positive usually
sits in another chunk among other samples.
Activation memory grows with ``chunk_size``, not with the batch; the cost is a second forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import nn

from fastclr.method.rng import keyed_uniform

_CHUNK_STREAM = 0x4348  # keyed_uniform "view" slot of the chunk-membership draws


def chunk_order(seed: int, step: int, rows: torch.Tensor) -> torch.Tensor:
    """The order in which this rank's views are split into chunks: a keyed random permutation.

    Args:
        rows: int64 [V*b] the global row of each local view in the single-process, view-major
            batch (row v*B + global sample id).
    Returns:
        int64 [V*b] a permutation of 0..V*b-1: views sorted by a random key of (seed, step, row).
    The key depends on the global row only, so one process orders the global batch by a uniform
    random permutation, and k processes order their views by the same keys (chunk i of every rank,
    whose BN statistics are shared under global BN, holds a random part of the global batch).
    """
    key = keyed_uniform(seed, step, rows, _CHUNK_STREAM, 1)[:, 0]  # [V*b]
    return torch.argsort(key, stable=True)  # ties of the 24-bit keys keep row order


def _permute(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """x[order], keeping channels_last where x has it."""
    out = x[order]
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def _bn_buffers(model: nn.Module) -> list[torch.Tensor]:
    return [buf for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for buf in m.buffers()]


def forward_backward(
    model: nn.Module,
    x: torch.Tensor | Sequence[torch.Tensor],
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    chunk_size: int,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    on_h: Callable[[torch.Tensor], None] | None = None,
    order: torch.Tensor | Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Gradients of ``loss_fn(model(x)[1])`` accumulated into ``.grad``, ``chunk_size`` rows at a time.

    Args:
        model: returns (h, z) for a batch of views; may be DDP-wrapped (gradients are then
            all-reduced once, after the last chunk).
        x: [V*b, ...] this rank's views, or several such groups of different sizes (multi-crop's
            full-size and small views): each group is chunked on its own and their z concatenated.
        loss_fn: z [V*b, D] -> scalar loss (may gather across ranks; every rank runs the same chunks).
        chunk_size: views per forward pass.
        autocast: context for the forward passes (mixed precision).
        on_h: receives the representations h [V*b, d] of the first pass (no gradient) of the first
            group, rows as in x.
        order: int64 [V*b] permutation of x's rows that defines the chunks (:func:`chunk_order`), one
            per group; None splits x as it is. ``loss_fn`` and ``on_h`` always see x's own row order.
    Returns:
        the loss (scalar tensor, detached).
    Stochastic layers (the dropout of text encoders) draw the same masks in both passes: each
    chunk's replay restarts the random generators where its first pass started (the paper's
    RandContext). BN running statistics are updated once per chunk, by the replay only.
    """
    groups = [x] if isinstance(x, torch.Tensor) else list(x)
    orders = [torch.arange(g.shape[0], device=g.device) for g in groups] if order is None else order
    orders = [orders] if isinstance(orders, torch.Tensor) else list(orders)
    chunks = [list(_permute(g, o).split(chunk_size)) for g, o in zip(groups, orders)]
    saved = [buf.clone() for buf in _bn_buffers(model)]
    rng, hz = _first_pass(model, [c for group in chunks for c in group], autocast)
    after = _rng_get(groups[0].device)
    h, z = _in_row_order(hz, [len(group) for group in chunks], orders)
    if on_h is not None:
        on_h(h)
    del hz, h
    with torch.no_grad():
        for buf, old in zip(_bn_buffers(model), saved):
            buf.copy_(old)  # the replay below updates the running statistics, once
    z = z.detach().float().requires_grad_()
    value = loss_fn(z)
    value.backward()
    assert z.grad is not None  # the loss depends on every row of z
    grads = [g[o].split(chunk_size) for g, o in zip(z.grad.split([g.shape[0] for g in groups]), orders)]
    flat = [(c, g) for cs, gs in zip(chunks, grads) for c, g in zip(cs, gs)]  # chunk order again
    no_sync = getattr(model, "no_sync", contextlib.nullcontext)
    for i, (c, g) in enumerate(flat):
        sync = contextlib.nullcontext() if i == len(flat) - 1 else no_sync()
        with sync:
            _rng_set(rng[i])
            with autocast():
                _, zc = model(c)
            zc.float().backward(g)
    _rng_set(after)  # the generators continue as after the first pass, as if each chunk ran once
    return value.detach()


def _in_row_order(
    hz: list[tuple[torch.Tensor, torch.Tensor]], counts: list[int], orders: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first group's h [V_0*b, d] and every group's z concatenated [sum V_g*b, D], each group back in
    its own row order (``hz`` holds the chunks of group g, ``counts[g]`` of them, in ``orders[g]``)."""
    hs: list[torch.Tensor] = []
    zs: list[torch.Tensor] = []
    first = 0
    for count, order in zip(counts, orders):
        part = hz[first : first + count]
        first += count
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.shape[0], device=order.device)
        zs.append(torch.cat([zc for _, zc in part])[inverse])
        if not hs:  # the representations of the first group only
            hs.append(torch.cat([hc for hc, _ in part])[inverse])
    return hs[0], torch.cat(zs)


def _first_pass(
    model: nn.Module, chunks: list[torch.Tensor], autocast: Callable[[], contextlib.AbstractContextManager]
) -> tuple[list[tuple[torch.Tensor, torch.Tensor | None, torch.device]], list[tuple[torch.Tensor, torch.Tensor]]]:
    """(h, z) of every chunk without activations, and the random generators' state before each."""
    rng, hz = [], []
    with torch.no_grad(), autocast():
        for c in chunks:
            rng.append(_rng_get(c.device))
            hz.append(model(c))
    return rng, hz


def _rng_get(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None, torch.device]:
    """The CPU generator's state, and the CUDA device's when the views are there."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda, device


def _rng_set(state: tuple[torch.Tensor, torch.Tensor | None, torch.device]) -> None:
    cpu, cuda, device = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)
