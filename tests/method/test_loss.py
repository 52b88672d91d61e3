"""NT-Xent and its variants against plain reference implementations and analytic values."""

import math

import pytest
import torch
import torch.nn.functional as F

import fastclr
from fastclr.method.loss import analytic_uniform_nt_xent


def reference_nt_xent(views, t):
    """Loops over anchors, straight from the paper's formula (V views: mean over positives)."""
    v_count, n = len(views), views[0].shape[0]
    z = [F.normalize(v.double(), dim=1) for v in views]
    rows = [(v, i) for v in range(v_count) for i in range(n)]
    total = 0.0
    for va, ia in rows:
        a = z[va][ia]
        denom = sum(math.exp(float(a @ z[vk][ik]) / t) for vk, ik in rows if (vk, ik) != (va, ia))
        terms = [-math.log(math.exp(float(a @ z[vp][ia]) / t) / denom) for vp in range(v_count) if vp != va]
        total += sum(terms) / len(terms)
    return total / len(rows)


@pytest.mark.parametrize("views,n,d,t", [(2, 4, 8, 0.5), (2, 7, 3, 0.1), (3, 5, 16, 0.2), (4, 3, 5, 1.0)])
def test_nt_xent_matches_reference(views, n, d, t):
    g = torch.Generator().manual_seed(n * 100 + d)
    zs = [torch.randn(n, d, generator=g) for _ in range(views)]
    assert fastclr.nt_xent(*zs, temperature=t).item() == pytest.approx(reference_nt_xent(zs, t), rel=1e-5)


@pytest.mark.parametrize("views,n", [(2, 8), (3, 5), (2, 1)])
def test_identical_embeddings_give_log_of_candidates(views, n):
    z = torch.ones(n, 4)
    value = fastclr.nt_xent(*[z] * views, temperature=0.3).item()
    assert value == pytest.approx(math.log(views * n - 1), abs=1e-6)
    assert value == pytest.approx(analytic_uniform_nt_xent(views, n), abs=1e-6)


def test_symmetric_in_views():
    g = torch.Generator().manual_seed(1)
    a, b, c = (torch.randn(6, 8, generator=g) for _ in range(3))
    assert fastclr.nt_xent(a, b).item() == pytest.approx(fastclr.nt_xent(b, a).item(), rel=1e-6)
    assert fastclr.nt_xent(a, b, c).item() == pytest.approx(fastclr.nt_xent(c, a, b).item(), rel=1e-6)


def test_gradients_reach_every_view():
    views = [torch.randn(5, 8, requires_grad=True) for _ in range(3)]
    fastclr.nt_xent(*views).backward()
    for v in views:
        assert v.grad is not None and v.grad.abs().sum() > 0


def test_perfect_alignment_beats_random():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 32, generator=g)
    assert fastclr.nt_xent(z, z).item() < fastclr.nt_xent(z, torch.randn(16, 32, generator=g)).item()


def test_bfloat16_inputs_are_computed_in_float32():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    out = fastclr.nt_xent(a.bfloat16(), b.bfloat16())
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(fastclr.nt_xent(a.bfloat16().float(), b.bfloat16().float()).item(), rel=1e-6)


def test_max_negatives_keeps_that_many_and_all_means_unchanged():
    from fastclr.method.loss import _stack_views, contrastive_terms

    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(10, 8, generator=g), torch.randn(10, 8, generator=g)
    z, s = _stack_views((a, b))
    rows = torch.arange(20)
    _, pos, neg = contrastive_terms(z, s, rows, z, s, max_negatives=5, generator=torch.Generator().manual_seed(0))
    assert (neg.sum(1) == 5).all() and (pos.sum(1) == 1).all()
    assert fastclr.nt_xent(a, b, max_negatives=18).item() == pytest.approx(fastclr.nt_xent(a, b).item(), rel=1e-6)
    assert (
        fastclr.nt_xent(a, b, max_negatives=3, generator=torch.Generator().manual_seed(0)).item()
        < fastclr.nt_xent(a, b).item()
    )


def reference_nt_logistic(views, t):
    z = [F.normalize(v.double(), dim=1) for v in views]
    n, vc = views[0].shape[0], len(views)
    rows = [(v, i) for v in range(vc) for i in range(n)]
    total = 0.0
    for va, ia in rows:
        a = z[va][ia]
        pos = [-math.log(1 / (1 + math.exp(-float(a @ z[vp][ia]) / t))) for vp in range(vc) if vp != va]
        neg = [-math.log(1 / (1 + math.exp(float(a @ z[vk][ik]) / t))) for vk, ik in rows if ik != ia]
        total += sum(pos) / len(pos) + sum(neg) / len(neg)
    return total / len(rows)


def test_nt_logistic_matches_reference():
    g = torch.Generator().manual_seed(4)
    zs = [torch.randn(5, 6, generator=g) for _ in range(2)]
    assert fastclr.nt_logistic(*zs, temperature=0.5).item() == pytest.approx(reference_nt_logistic(zs, 0.5), rel=1e-5)


def test_nt_logistic_has_a_negative_term():
    """Collapse (all z equal) must not be a minimum: the negatives push it up."""
    z = torch.ones(6, 4)
    g = torch.Generator().manual_seed(5)
    spread = torch.randn(6, 4, generator=g)
    assert fastclr.nt_logistic(z, z).item() > fastclr.nt_logistic(spread, spread).item()


def test_margin_triplet_matches_reference():
    g = torch.Generator().manual_seed(6)
    a, b = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    za, zb = F.normalize(a.double(), dim=1), F.normalize(b.double(), dim=1)
    z = torch.cat([za, zb])
    total = 0.0
    for r in range(8):
        i = r % 4
        p = (r + 4) % 8
        negs = [k for k in range(8) if k % 4 != i]
        total += sum(max(float(z[r] @ z[k] - z[r] @ z[p]) + 0.5, 0.0) for k in negs) / len(negs)
    assert fastclr.margin_triplet(a, b, margin=0.5).item() == pytest.approx(total / 8, rel=1e-5)


def reference_margin_triplet(views, margin, max_negatives=None, seed=0):
    """Margin triplet from the paper's formula (Table 2), every (anchor, positive, negative) triple spelled out:
    anchor u = view v of sample i, positives the other views of i, negatives every view of the other samples;
    the anchor's loss is the mean of max(u.v- - u.v+ + m, 0) over its (positive, negative) pairs, the result
    the mean over anchors. With ``max_negatives``, each anchor keeps the negatives with the largest of the
    uniform numbers torch.rand(A, C) draws from ``seed`` (row = anchor, column = candidate, the documented
    random choice of fastclr.contrastive_terms). Float64, torch basics only."""
    n = views[0].shape[0]
    z = torch.cat([v.double() / v.double().norm(dim=1, keepdim=True) for v in views])  # row v*n + i: view v of i
    rows = z.shape[0]
    draws = None
    if max_negatives is not None and max_negatives < rows:
        draws = torch.rand(rows, rows, generator=torch.Generator().manual_seed(seed))
    per_anchor = []
    for a in range(rows):
        positives = [p for p in range(rows) if p != a and p % n == a % n]
        negatives = [q for q in range(rows) if q % n != a % n]
        if draws is not None:
            negatives = sorted(negatives, key=lambda q: -float(draws[a, q]))[:max_negatives]
        s_pos = torch.stack([z[a] @ z[p] for p in positives])  # [P]
        s_neg = torch.stack([z[a] @ z[q] for q in negatives])  # [M]
        hinge = torch.clamp(s_neg[None, :] - s_pos[:, None] + margin, min=0.0)  # [P, M]: every triple
        per_anchor.append(hinge.sum() / (len(positives) * len(negatives)))
    return torch.stack(per_anchor).mean()


@pytest.mark.parametrize("views,n,cap", [(2, 6, None), (3, 5, None), (4, 3, None), (2, 8, 5), (3, 6, 4)])
def test_margin_triplet_equals_the_cube_reference_with_gradients(views, n, cap):
    g = torch.Generator().manual_seed(views * 10 + n)
    zs = [torch.randn(n, 6, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(views)]
    ours = fastclr.margin_triplet(*zs, margin=0.3, max_negatives=cap, generator=torch.Generator().manual_seed(1))
    ref = reference_margin_triplet(zs, 0.3, cap, seed=1)
    assert ours.dtype == torch.float32 and 0 < ref.item()  # computed in float32; some hinges are active
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    g_ours = torch.autograd.grad(ours, zs)
    g_ref = torch.autograd.grad(ref, zs)
    for a, b in zip(g_ours, g_ref, strict=True):
        assert a.abs().max() > 0 and torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_margin_triplet_memory_is_not_cubic():
    """2048 anchors x 2048 candidates: the cube would be 8.6e9 floats (34 GB); A x C is 4.2e6."""
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(1024, 8, generator=g, requires_grad=True), torch.randn(1024, 8, generator=g)
    loss = fastclr.margin_triplet(z1, z2, margin=0.5)
    loss.backward()
    assert torch.isfinite(loss) and z1.grad is not None and torch.isfinite(z1.grad).all()


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        fastclr.nt_xent(torch.randn(4, 3))
    with pytest.raises(ValueError):
        fastclr.nt_xent(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError):
        fastclr.nt_xent(torch.randn(4, 3), torch.randn(4, 3), temperature=0)
