"""How pretraining batches reach the step: one loader per tier (``tiers.py``), all yielding the batch
types of ``base.py``, in one keyed order (``order.py``), with CPU workers (``workers.py``) or the GPU's
JPEG decoder (``gpu_decode.py``) doing the reading."""
