"""Embed a folder of images with a trained encoder and show each query's nearest neighbours.

    fastclr pretrain --out runs/digits                     # any fastclr checkpoint or export will do
    python examples/embed_and_search.py runs/digits/checkpoints/last.pt IMAGES [--queries 5] [--k 5]

IMAGES is a folder (searched recursively, as ``--data`` reads it), a .csv/.txt list or any data
spec. Neighbours are by cosine similarity of h, the representation SimCLR evaluates (the
projection head is dropped after pretraining, paper section 4.2); each line prints a query and its
k nearest other images with their similarities.
"""

from __future__ import annotations

import argparse

import numpy as np

import fastclr


def nearest(h: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices [N, k] and cosine similarities [N, k] of each row's k nearest other rows."""
    unit = h / np.linalg.norm(h, axis=1, keepdims=True).clip(1e-12)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)  # an image is not its own neighbour
    order = np.argsort(-sim, axis=1)[:, :k]
    return order, np.take_along_axis(sim, order, axis=1)


def main(checkpoint: str, images: str, queries: int = 5, k: int = 5) -> list[dict]:
    encoder = fastclr.load_encoder(checkpoint)  # eval mode; encoder.preprocess makes its input
    h, ids = fastclr.embed(encoder, images)  # float32 [N, d] and the file paths, a batch at a time
    index, sim = nearest(h, min(k, len(ids) - 1))
    results = []
    for q in range(min(queries, len(ids))):
        found = [(ids[j], float(s)) for j, s in zip(index[q], sim[q])]
        results.append({"query": ids[q], "neighbours": found})
        print(ids[q])
        for path, s in found:
            print(f"    {s:.3f}  {path}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="OUT/checkpoints/last.pt, finetuned.pt, or an export (.safetensors)")
    parser.add_argument("images", help="a folder of images, a .csv/.txt list, or any data spec")
    parser.add_argument("--queries", type=int, default=5, help="how many images to show neighbours for")
    parser.add_argument("--k", type=int, default=5, help="neighbours per query")
    args = parser.parse_args()
    main(args.checkpoint, args.images, args.queries, args.k)
