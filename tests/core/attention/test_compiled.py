"""compile_blocks: the compiled model equals eager, graphs are counted, and a next story with similar coverage
(bucketed segment lengths, symbolic packed token counts) compiles nothing new. Dynamo with the eager backend (no
C++ compile) keeps this fast."""

import torch
from diffusers import PixArtTransformer2DModel

from lay2story_core.attention import SubjectSlots, TokenPacking
from lay2story_core.attention.compiled import compile_blocks
from lay2story_core.models import Lay2StoryTransformer, SubjectBranch, SubjectInputs


def _model():
    torch.manual_seed(0)
    pixart = PixArtTransformer2DModel(num_layers=2, num_attention_heads=2, attention_head_dim=8, caption_channels=12,
                                      cross_attention_dim=16, sample_size=20, use_additional_conditions=False)
    branch = SubjectBranch.from_transformer(pixart)
    with torch.no_grad():
        for block in branch.blocks:
            block.proj_out.weight.normal_(std=0.1)
    return Lay2StoryTransformer(pixart, branch).eval()


def _call(model, box, gen):
    (h, w) = box
    masks = torch.zeros(4, 10, 10, dtype=torch.bool)
    for f in range(2):
        masks[f, f:f + h, 1:1 + w] = True
    slots = SubjectSlots(masks.view(4, -1)[:2], torch.arange(2), torch.zeros(2, dtype=torch.long))
    x = torch.randn(4, 4, 20, 20, generator=gen)
    text = torch.randn(4, 6, 12, generator=gen)
    subject = SubjectInputs(slots=slots, caption_embeds=torch.randn(2, 6, 12, generator=gen),
                            packing=TokenPacking.build(slots, 4, bucket=True))
    with torch.no_grad():
        return model(x, text, torch.full((4,), 10), None, None, subject=subject).sample


def test_compiled_blocks_equal_eager_and_similar_stories_do_not_recompile():
    torch._dynamo.reset()
    model = _model()
    # tokens per slot 9, 16 (bucket 16), then 25, 27 (bucket 28)
    boxes = [(3, 3), (4, 4), (5, 5), (3, 9)]
    eager = [_call(model, box, torch.Generator().manual_seed(i)) for i, box in enumerate(boxes)]
    stats = compile_blocks(model.transformer, model.subject_branch, backend="eager")
    graphs = []
    for i, (box, ref) in enumerate(zip(boxes, eager)):
        torch.testing.assert_close(_call(model, box, torch.Generator().manual_seed(i)), ref, atol=1e-5, rtol=1e-5)
        graphs.append(stats.graphs)
    assert graphs[0] >= 2  # the global block and the subject block
    assert graphs[1] == graphs[0]  # same bucket: nothing new
    assert graphs[2] - graphs[1] <= 1  # a new bucket: at most one subject graph
    assert graphs[3] == graphs[2]  # same bucket again
    torch._dynamo.reset()
