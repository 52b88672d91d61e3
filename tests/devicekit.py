"""A CPU stand-in for tensors on an accelerator, for proving on a machine without one that every path
copies features to the host before turning them into numpy.

A CUDA tensor refuses ``.numpy()`` (and ``np.asarray``) with a TypeError and gives a host tensor from
``.cpu()``; ``OnDevice`` does the same on the CPU. Results of operators on it stay ``OnDevice``, as
results of operators on a CUDA tensor stay on the device. ``device_outputs()`` makes every module's
output such a tensor (a global forward hook), so features, logits and embeddings come out of any model
"on the device" whatever the code path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

MESSAGE = "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory first."


def _plain(t: torch.Tensor) -> torch.Tensor:
    with torch._C.DisableTorchFunctionSubclass():
        return t.as_subclass(torch.Tensor)


class OnDevice(torch.Tensor):
    """A tensor that behaves, for host transfers, like one on a CUDA device (module docstring)."""

    def numpy(self, *args, **kwargs):  # noqa: ANN201 - as torch.Tensor.numpy
        raise TypeError(MESSAGE)

    def __array__(self, *args, **kwargs):  # noqa: ANN204 - np.asarray(t) on a CUDA tensor fails the same way
        raise TypeError(MESSAGE)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cpu or (func is torch.Tensor.to and _to_host(args[1:], kwargs)):
            with torch._C.DisableTorchFunctionSubclass():
                out = func(*args, **kwargs)
            return _plain(out).clone()  # a copy in host memory, as from the device
        return super().__torch_function__(func, types, args, kwargs)


def _to_host(args: tuple, kwargs: dict) -> bool:
    """Whether ``Tensor.to(*args, **kwargs)`` names the CPU explicitly."""
    device = kwargs.get("device")
    for a in args:
        if isinstance(a, (str, torch.device)):
            device = a
    return device is not None and torch.device(device).type == "cpu"


def on_device(value):  # noqa: ANN001, ANN201 - any module output
    """``value`` with every floating tensor in it made ``OnDevice`` (tensors, tuples, lists, dicts)."""
    if isinstance(value, torch.Tensor):
        return value if isinstance(value, OnDevice) else value.as_subclass(OnDevice)
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(on_device(v) for v in value)
    if isinstance(value, list):
        return [on_device(v) for v in value]
    if isinstance(value, dict):  # transformers' ModelOutput too
        for k in list(value.keys()):
            value[k] = on_device(value[k])
        return value
    return value


@contextlib.contextmanager
def device_outputs() -> Iterator[None]:
    """Every module's output is ``OnDevice`` inside the block."""
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, args, out: on_device(out))
    try:
        yield
    finally:
        handle.remove()
