"""The paper's reference numbers (Lay2Story, arXiv 2508.08949, ICCV 2025), printed beside our results.

Main comparison on Lay2Story-Bench (DreamSim and CLIP-I after CarveKit background removal, FID, Recall@1, human
preference, seconds per story at 25 steps / CFG 4.5). Memory: the paper reports 29.7 GB for 4 frames and 62.1 GB
for 32 frames. Ablations (FID): no subject branch 110.58, no reference image 50.27, no masked 3D self-attention
66.14, full model 26.71. The paper's numbers come from its own backbones, data and GPUs: they are a reference
point, not a like-for-like comparison with runs made here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["PAPER_ABLATION_FID", "PAPER_MEMORY_GB", "PAPER_ROWS", "PAPER_SOURCE", "PaperRow", "paper_rows"]

PAPER_SOURCE = "Lay2Story (arXiv 2508.08949, ICCV 2025), main comparison table on Lay2Story-Bench"


@dataclass(frozen=True)
class PaperRow:
    method: str
    dreamsim: float
    clip_i: float
    fid: float
    recall_at_1: float
    human: float
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


PAPER_ROWS: tuple[PaperRow, ...] = (
    PaperRow("1Prompt1Story (paper)", 0.2429, 0.8461, 66.79, 0.5583, 0.6742, 20.69),
    PaperRow("FLUX.1-dev IPA (paper)", 0.1533, 0.9138, 33.18, 0.6482, 0.7059, 61.38),
    PaperRow("Lay2Story w/o lc (paper)", 0.1602, 0.9214, 35.82, 0.6376, 0.7123, 13.63),
    PaperRow("Lay2Story w/ lc (paper)", 0.1324, 0.9299, 26.71, 0.7012, 0.7561, 14.02),
)

# (frames, GB) pairs as reported.
PAPER_MEMORY_GB: tuple[tuple[int, float], ...] = ((4, 29.7), (32, 62.1))

PAPER_ABLATION_FID: tuple[tuple[str, float], ...] = (
    ("w/o subject branch", 110.58),
    ("w/o reference image", 50.27),
    ("w/o masked 3D self-attention", 66.14),
    ("full Lay2Story", 26.71),
)


def paper_rows() -> list[dict]:
    """The paper's rows as table rows with the same keys as :func:`~lay2story_core.eval.benchmark.summary_row`."""
    return [
        {
            "method": row.method,
            "dreamsim": row.dreamsim,
            "clip_i": row.clip_i,
            "fid": row.fid,
            "recall_at_1": row.recall_at_1,
            "seconds_per_story": row.seconds,
            "peak_memory_gb": None,
            "source": "paper",
        }
        for row in PAPER_ROWS
    ]
