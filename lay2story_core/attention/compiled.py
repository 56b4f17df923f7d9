"""``torch.compile`` for sampling: the global blocks (fixed shapes per story size) and the subject blocks (packed
token counts symbolic, segment lengths bucketed by ``TokenPacking.build(..., bucket=True)``), with a count of the
graphs compiled so a bench can show that the next story with similar coverage does not recompile.

Off by default: on CPU it does not pay for a single story (``bench/sampling.py --compile`` measures it); on CUDA
turn it on for long sessions.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class CompileStats:
    """Counts the graphs handed to the compiler backend (one per compile or recompile)."""

    graphs: int = 0
    backend_name: str = "inductor"

    def backend(self, gm, example_inputs):
        self.graphs += 1
        if self.backend_name == "eager":
            return gm.forward
        from torch._inductor.compile_fx import compile_fx

        return compile_fx(gm, example_inputs)


def compile_blocks(transformer: nn.Module, subject_branch: nn.Module | None = None, *, subject: bool = True,
                   backend: str = "inductor") -> CompileStats:
    """Compile every global block of ``transformer`` (static shapes) and, with ``subject``, every block of
    ``subject_branch`` (dynamic shapes: the packed token count changes with the layout) in place.

    Returns the :class:`CompileStats` that counts compilations. Build the packing with ``bucket=True`` so segment
    lengths (Python ints the compiled code specialises on) fall into few buckets.
    """
    stats = CompileStats(backend_name=backend)
    for block in transformer.transformer_blocks:
        block.compile(backend=stats.backend, dynamic=False)
    if subject and subject_branch is not None:
        for block in subject_branch.blocks:
            block.compile(backend=stats.backend, dynamic=True)
    return stats
