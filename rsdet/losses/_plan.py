"""What a ranking loss's backward needs: the stored gradient in a compact form (docs/losses.md,
"How the exact ... algorithm works", step 4), shared by the torch code and the compiled kernels."""

from __future__ import annotations

import torch

from rsdet.losses._checks import compute_dtype


class GradientPlan:
    """What backward needs to rebuild the stored gradient without an N-sized float buffer.

    Its tensors travel through ``ctx.save_for_backward`` (see :meth:`pack`), so autograd frees
    them after backward (unless ``retain_graph``) even while the loss tensor itself is kept;
    only metadata and the O(1) ``grad_l1`` stay on the context.
    """

    _FIELDS = ("pos_index", "pos_grad", "bins", "value", "slope", "left")

    def __init__(self, shape, dtype, cdtype, pos_index=None, pos_grad=None, bins=None,
                 tables=(None, None, None), grad_l1=None):
        self.shape, self.dtype, self.cdtype = shape, dtype, cdtype
        self.pos_index, self.pos_grad = pos_index, pos_grad
        self.bins = bins
        self.value, self.slope, self.left = tables
        # L1 norm of the stored gradient in O(P): negatives only receive >= 0 and the gradient
        # sums to zero, so sum over negatives = -sum over positives.
        if grad_l1 is None:
            grad_l1 = (torch.zeros((), dtype=cdtype) if pos_grad is None
                       else (pos_grad.abs() - pos_grad).sum())
        self.grad_l1 = grad_l1

    def pack(self) -> tuple:
        """Move the tensors out (for save_for_backward); :meth:`unpack` puts them back."""
        present = tuple(name for name in self._FIELDS if getattr(self, name) is not None)
        tensors = tuple(getattr(self, name) for name in present)
        for name in present:
            setattr(self, name, None)
        self._present = present
        return tensors

    def unpack(self, tensors) -> None:
        for name, tensor in zip(self._present, tensors):
            setattr(self, name, tensor)

    def gradient(self, logits: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
        if self.pos_index is None:  # no positives: zero gradient everywhere
            return torch.zeros(self.shape, dtype=self.dtype, device=logits.device)
        # Imported here: _compiled imports this module.
        from rsdet.losses import _compiled
        from rsdet.losses._kernel import numba_kernels

        kernels = numba_kernels(self.bins, logits)
        if kernels is not None:   # compiled: one pass over the entries, on torch's threads
            grad = _compiled.gather(kernels, self, logits, upstream)
        else:
            g = upstream.to(self.cdtype)
            # The upstream scalar is folded into the (2P + 2)-sized tables, not the N-sized
            # result.  Positives and ignored entries sit in the last bin (value and slope 0).
            grad = self._gather(logits, g)
            grad.index_copy_(0, self.pos_index, self.pos_grad * g)
        return grad.view(self.shape).to(self.dtype)

    def _gather(self, logits: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        grad = (self.value * g).index_select(0, self.bins)
        if self.slope is not None:
            x = logits.detach().reshape(-1).to(self.cdtype)
            offset = self.left.index_select(0, self.bins)
            torch.sub(x, offset, out=offset)          # in place: one fresh N-sized buffer less
            grad.addcmul_((self.slope * g).index_select(0, self.bins), offset)
        return grad


def save(ctx, logits, plan: GradientPlan) -> None:
    ctx.plan = plan
    ctx.save_for_backward(logits, *plan.pack())


def restore(ctx):
    logits, *tensors = ctx.saved_tensors
    ctx.plan.unpack(tensors)
    return logits, ctx.plan


def zero_plan(logits: torch.Tensor) -> GradientPlan:
    return GradientPlan(logits.shape, logits.dtype, compute_dtype(logits.dtype))
