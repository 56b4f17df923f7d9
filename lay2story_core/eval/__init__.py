"""Evaluation metrics for story generation (Lay2Story-Bench style), with every backbone from a LOCAL folder.

- :mod:`.consistency`: subject crops, CLIP-I, DreamSim consistency, Recall@1 (definitions in its doc);
- :mod:`.dreamsim`: the DreamSim ensemble recipe over transformers backbones (the ``dreamsim`` package needs
  torchvision/timm, so it is re-implemented; without DreamSim's LoRA weights, and named so in every result);
- :mod:`.inception` + :mod:`.fid`: the FID Inception-v3 without torchvision and the Fréchet distance on any extractor;
- :mod:`.story_set`: the prompt-set format and the generated-frames layout on disk;
- :mod:`.benchmark`: evaluate a set of generated stories into one summary row;
- :mod:`.paper`: the paper's reference numbers.
"""

from .benchmark import MetricModels, evaluate_set, evaluate_story, list_real_images, summary_row
from .consistency import clip_i_score, dreamsim_score, mean_pairwise_cosine, recall_at_1, subject_crops
from .dreamsim import RECIPE_BACKBONES, DreamSimBackbone, DreamSimEnsemble, normalize_embedding
from .fid import EmbedderFeatures, FeatureStats, InceptionFeatures, compute_fid, fid_from_stats, frechet_distance
from .images import box_to_pixels, crop_subject, prepare_batch, to_pil
from .inception import FIDInceptionV3, find_inception_weights, load_fid_inception
from .paper import PAPER_ABLATION_FID, PAPER_MEMORY_GB, PAPER_ROWS, PAPER_SOURCE, PaperRow, paper_rows
from .story_set import (
    EvalInputError,
    StoryEntry,
    find_frame_files,
    load_generated_frames,
    load_prompt_set,
    load_stories,
    read_generation_stats,
    save_prompt_set,
)

__all__ = [
    "PAPER_ABLATION_FID",
    "PAPER_MEMORY_GB",
    "PAPER_ROWS",
    "PAPER_SOURCE",
    "RECIPE_BACKBONES",
    "DreamSimBackbone",
    "DreamSimEnsemble",
    "EmbedderFeatures",
    "EvalInputError",
    "FIDInceptionV3",
    "FeatureStats",
    "InceptionFeatures",
    "MetricModels",
    "PaperRow",
    "StoryEntry",
    "box_to_pixels",
    "clip_i_score",
    "compute_fid",
    "crop_subject",
    "dreamsim_score",
    "evaluate_set",
    "evaluate_story",
    "find_frame_files",
    "fid_from_stats",
    "find_inception_weights",
    "frechet_distance",
    "list_real_images",
    "load_fid_inception",
    "load_generated_frames",
    "load_prompt_set",
    "load_stories",
    "mean_pairwise_cosine",
    "normalize_embedding",
    "paper_rows",
    "prepare_batch",
    "read_generation_stats",
    "recall_at_1",
    "save_prompt_set",
    "subject_crops",
    "summary_row",
    "to_pil",
]
