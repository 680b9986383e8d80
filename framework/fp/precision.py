"""Float32 precision on NVIDIA GPUs: whether cuDNN convolutions and CUDA matrix products may use
TF32 (a 10-bit mantissa) for float32 tensors.

torch lets cuDNN convolutions use TF32 by default, so on an Ampere-or-later GPU "fp32" training is
TF32 in every convolution unless something says otherwise. flowprune says:

- training follows ``experiment.tf32`` (``set_tf32``, called when a run is built): False (the
  default) keeps convolutions and matrix products in full fp32; True lets both use TF32 tensor
  cores, whose peak rate NVIDIA gives as 8x the fp32 rate on an A100, at the cost of keeping 10
  of fp32's 23 mantissa bits in each product's inputs (how much faster a small CIFAR network
  trains is what ``benchmarks/gpu_check.sh`` measures; the GPU check reports it);
- scoring always runs in full fp32 (``full_fp32``, around every ``fp.score``), so a GPU ranks
  filters as the CPU does, up to fp32 rounding; a near tie of a signed sum (GraSP) is not
  reordered by TF32's coarser products.

Only the flags of torch's current API (``fp32_precision``) are set where torch has it, the legacy
``allow_tf32`` flags otherwise: torch refuses to read flags that were set through both. On a
machine without CUDA the flags exist and change nothing.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

#: the precisions the flags take: full IEEE fp32, or TF32 allowed
IEEE, TF32 = "ieee", "tf32"


def _new_api() -> bool:
    conv = getattr(torch.backends.cudnn, "conv", None)
    return hasattr(conv, "fp32_precision") and hasattr(torch.backends.cuda.matmul,
                                                       "fp32_precision")


def tf32_flags() -> tuple:
    """The current flags (for ``restore``): convolutions' and matrix products'."""
    if _new_api():
        return (torch.backends.cudnn.conv.fp32_precision,
                torch.backends.cuda.matmul.fp32_precision)
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def restore(flags: tuple) -> None:
    """Put back flags read by ``tf32_flags``."""
    conv, matmul = flags
    if _new_api():
        torch.backends.cudnn.conv.fp32_precision = conv
        torch.backends.cuda.matmul.fp32_precision = matmul
    else:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


def set_tf32(enabled: bool) -> None:
    """Let cuDNN convolutions and CUDA matrix products use TF32 (``enabled``) or not."""
    if _new_api():
        restore((TF32, TF32) if enabled else (IEEE, IEEE))
    else:
        restore((bool(enabled), bool(enabled)))


def tf32_enabled() -> bool:
    """Whether convolutions may use TF32 now (what ``set_tf32`` set, or torch's default)."""
    conv = tf32_flags()[0]
    return conv == TF32 if isinstance(conv, str) else bool(conv)


@contextlib.contextmanager
def full_fp32(enabled: bool = True) -> Iterator[None]:
    """Convolutions and matrix products in full fp32 inside the block (nothing changes when
    ``enabled`` is False); the flags found on entry are restored on exit."""
    if not enabled:
        yield
        return
    saved = tf32_flags()
    set_tf32(False)
    try:
        yield
    finally:
        restore(saved)


__all__ = ["full_fp32", "set_tf32", "tf32_enabled", "tf32_flags"]
