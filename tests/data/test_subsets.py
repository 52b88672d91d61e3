"""Class-balanced subsets: equal shares, small classes give all they have, keyed on the seed alone."""

import torch

from fastclr.data.sets import ImageSet
from fastclr.data.subsets import balanced_indices, balanced_subset, class_quotas


def test_balanced_subset_is_balanced_and_depends_only_on_labels_count_seed():
    labels = torch.arange(100) % 4
    data = ImageSet(torch.zeros(100, 3, 2, 2, dtype=torch.uint8), labels, [str(i) for i in range(100)], list("abcd"))
    sub = balanced_subset(data, 10, seed=1)
    assert torch.bincount(sub.labels).tolist() == [3, 3, 2, 2]
    assert sub.ids == balanced_subset(data, 10, seed=1).ids != balanced_subset(data, 10, seed=2).ids
    assert len(balanced_subset(data, 0, seed=1)) == 100


def test_a_class_smaller_than_its_share_gives_all_it_has_and_the_rest_is_shared():
    labels = torch.tensor([0] * 2 + [1] * 20 + [2] * 20)  # class 0 holds 2 samples, its share of 12 is 4
    pick = balanced_indices(labels, 12, seed=0)
    assert len(pick) == 12 and len(set(pick.tolist())) == 12
    assert torch.bincount(labels[pick], minlength=3).tolist() == [2, 5, 5]
    assert class_quotas([2, 20, 20], 13) == [2, 6, 5]
    assert class_quotas([5, 5, 5], 7) == [3, 2, 2]  # no class short: equal shares, first classes +1
    assert class_quotas([1, 0, 3], 10) == [1, 0, 3]  # more than there is: everything
    assert len(balanced_indices(labels, 100, seed=0)) == 42
