import torch

from fastclr.method.rng import keyed_generator, keyed_uniform


def test_uniform_moments_and_range():
    u = keyed_uniform(0, 0, torch.arange(50000), 0, 4)
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    # neighbouring samples and neighbouring draws are uncorrelated
    assert abs(torch.corrcoef(torch.stack([u[:-1, 0], u[1:, 0]]))[0, 1]) < 0.02
    assert abs(torch.corrcoef(torch.stack([u[:, 0], u[:, 1]]))[0, 1]) < 0.02


def test_keys_select_independent_streams():
    idx = torch.arange(1000)
    base = keyed_uniform(1, 2, idx, 0, 3)
    assert torch.equal(base, keyed_uniform(1, 2, idx, 0, 3))
    for other in (keyed_uniform(2, 2, idx, 0, 3), keyed_uniform(1, 3, idx, 0, 3), keyed_uniform(1, 2, idx, 1, 3)):
        assert (base != other).float().mean() > 0.99
    assert torch.equal(
        keyed_uniform(1, 2, idx[500:], 0, 3), base[500:]
    )  # a sample's numbers do not depend on the batch


def test_large_indices_work():
    big = torch.tensor([2**33 + 5, 2**40 + 7])
    u = keyed_uniform(0, 0, big, 0, 2)
    assert (u >= 0).all() and (u < 1).all() and u[0, 0] != u[1, 0]


def test_keyed_generator_reproducible():
    a = torch.randperm(10, generator=keyed_generator(3, 1))
    assert torch.equal(a, torch.randperm(10, generator=keyed_generator(3, 1)))
    assert not torch.equal(a, torch.randperm(10, generator=keyed_generator(3, 2)))
