"""What a diffusers user guesses works: save/from_pretrained with model_index.json (also the shipped demo folder), a
story path, callback_on_step_end + interrupt, return_dict/BaseOutput, and model CPU offload that really moves the
transformer and the subject branch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers.utils import BaseOutput
from tiny_models import make_pipeline

from lay2story_core.cli import EMBEDDED_MODEL
from lay2story_core.pipelines import GenerationCancelled, StoryPipeline, StoryPipelineOutput
from lay2story_core.pipelines.loading import load_story_pipeline
from lay2story_core.story import load_story

SIZE = dict(height=16, width=16, num_inference_steps=3, output_type="pt", seed=0)
STORY = "stories/story.json"


@pytest.fixture(scope="module")
def pipe():
    return make_pipeline()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------ save / from_pretrained
def test_save_pretrained_writes_model_index_and_from_pretrained_round_trips(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    index = json.loads((tmp_path / "p" / "model_index.json").read_text())
    assert index["_class_name"] == "StoryPipeline"
    assert index["scheduler"] == ["diffusers", "DPMSolverMultistepScheduler"]
    assert index["subject_branch"][1] == "SubjectBranch"
    again = StoryPipeline.from_pretrained(tmp_path / "p")
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert type(again.scheduler) is type(pipe.scheduler)
    assert public(again.scheduler.config) == public(pipe.scheduler.config)
    for name in ("transformer", "subject_branch", "vae", "text_encoder"):
        assert _same_weights(getattr(again, name), getattr(pipe, name)), name
    assert torch.equal(again(STORY, **SIZE).images, pipe(STORY, **SIZE).images)


def test_diffusers_own_loader_reads_the_saved_folder(pipe, tmp_path):
    """The folder is a valid diffusers pipeline: DiffusionPipeline.from_pretrained's generic code (not ours) loads
    every component, the scheduler as a scheduler (not the raw [library, class] list)."""
    from diffusers import DiffusionPipeline, SchedulerMixin

    pipe.save_pretrained(tmp_path / "p")
    generic = DiffusionPipeline.from_pretrained.__func__(StoryPipeline, tmp_path / "p")
    assert isinstance(generic.scheduler, SchedulerMixin)
    assert _same_weights(generic.subject_branch, pipe.subject_branch)


def test_without_subject_branch_and_scheduler_round_trip(tmp_path):
    bare = make_pipeline(subject_branch=False)
    bare.save_pretrained(tmp_path / "p")
    again = StoryPipeline.from_pretrained(tmp_path / "p")
    assert again.subject_branch is None and again.scheduler is not None
    generic = StoryPipeline.from_pretrained(tmp_path / "p", scheduler=None)
    assert generic.scheduler is not None  # None means "the default", as in the constructor


def test_the_shipped_demo_loads_with_and_without_its_model_index(tmp_path):
    import shutil

    assert (EMBEDDED_MODEL / "model_index.json").is_file()
    demo = StoryPipeline.from_pretrained(EMBEDDED_MODEL)
    assert demo.subject_branch is not None
    bare = tmp_path / "demo"
    shutil.copytree(EMBEDDED_MODEL, bare)
    (bare / "model_index.json").unlink()
    assert _same_weights(StoryPipeline.from_pretrained(bare).transformer, demo.transformer)
    assert _same_weights(load_story_pipeline(bare).subject_branch, demo.subject_branch)


def test_from_pretrained_takes_a_trainer_exported_subject_branch(pipe, tmp_path):
    bare = make_pipeline(subject_branch=False)
    bare.save_pretrained(tmp_path / "base")
    pipe.subject_branch.save_pretrained(tmp_path / "out" / "subject_branch")  # what training/train.py exports
    combined = StoryPipeline.from_pretrained(tmp_path / "base", subject_branch=tmp_path / "out")
    assert _same_weights(combined.subject_branch, pipe.subject_branch)
    given = StoryPipeline.from_pretrained(tmp_path / "base", subject_branch=pipe.subject_branch)
    assert given.subject_branch is pipe.subject_branch


# ------------------------------------------------------------------------------------------------- story as a path
@pytest.mark.parametrize("form", [str, Path])
def test_a_story_path_is_read_as_a_file(pipe, form):
    a = pipe(form(STORY), **SIZE).images
    assert torch.equal(a, pipe(load_story(STORY), **SIZE).images)


def test_a_missing_story_path_names_the_file(pipe):
    from lay2story_core.story import LayoutError

    with pytest.raises(LayoutError, match="stories/nope.json: story file not found"):
        pipe("stories/nope.json", **SIZE)


# ---------------------------------------------------------------------------------- callbacks, interrupt, output
def test_callback_on_step_end_sees_and_can_replace_the_latents(pipe):
    seen = []

    def on_step_end(p, step, timestep, kwargs):
        assert p is pipe and set(kwargs) == {"latents"}
        seen.append((step, int(timestep), kwargs["latents"].shape))
        return {"latents": kwargs["latents"] * 0.0} if step == 2 else kwargs

    out = pipe(STORY, callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"], **SIZE)
    assert [s for s, _, _ in seen] == [0, 1, 2] and seen[0][2] == (4, 4, 8, 8)
    assert not torch.equal(out.latents, pipe(STORY, **SIZE).latents)
    assert torch.count_nonzero(out.latents) == 0  # the replaced latents are the result
    old = []
    pipe(STORY, callback=lambda step, total, latents: old.append((step, total)), **SIZE)  # the old callback works
    assert old == [(1, 3), (2, 3), (3, 3)]


def test_callback_tensor_inputs_are_checked(pipe):
    with pytest.raises(ValueError, match=r"callback_on_step_end_tensor_inputs: 'prompt' is not one of \['latents'"):
        pipe(STORY, callback_on_step_end=lambda *a: {}, callback_on_step_end_tensor_inputs=["prompt"], **SIZE)


def test_interrupt_stops_and_returns_nothing_partial(pipe):
    calls = []

    def stop(p, step, timestep, kwargs):
        calls.append(step)
        p._interrupt = step == 0
        return kwargs

    with pytest.raises(GenerationCancelled, match="interrupted at step 1/3"):
        pipe(STORY, callback_on_step_end=stop, **SIZE)
    assert calls == [0] and pipe.interrupt is True
    pipe(STORY, **SIZE)
    assert pipe.interrupt is False  # reset by the next call


def test_return_dict_and_base_output(pipe):
    out = pipe(STORY, **SIZE)
    assert isinstance(out, StoryPipelineOutput) and isinstance(out, BaseOutput)
    assert out[0] is out.images and out["latents"] is out.latents
    plain = pipe(STORY, return_dict=False, **SIZE)
    assert isinstance(plain, tuple) and len(plain) == 1 and torch.equal(plain[0], out.images)


# ------------------------------------------------------------------------------------------------ model offload
def test_model_cpu_offload_moves_the_transformer_and_the_subject_branch(monkeypatch):
    """With offload hooks (``device="cpu"`` here), each model is onloaded when its forward runs and the previous one of
    the chain is offloaded: the global blocks run with the transformer onloaded and the text encoder offloaded, the
    subject blocks with the subject branch onloaded, the VAE decodes with the transformer offloaded; the output is
    unchanged. (accelerate skips moves between identical devices, so the hooks' placement decisions are recorded
    rather than the tensors' devices.)"""
    from accelerate.hooks import CpuOffload

    pipe = make_pipeline()
    reference = pipe("stories/story.json", **SIZE).images
    pipe.enable_model_cpu_offload(device="cpu")
    names = {id(m): n for n, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
    state: dict[str, str] = {}
    real_pre, real_init = CpuOffload.pre_forward, CpuOffload.init_hook

    def pre_forward(self, module, *args, **kwargs):
        if self.prev_module_hook is not None:  # on an accelerator: offloaded (accelerate: unless already on CPU)
            state[names.get(id(self.prev_module_hook.model), "?")] = "off"
        state[names.get(id(module), "?")] = "on"
        return real_pre(self, module, *args, **kwargs)

    def init_hook(self, module):
        state[names.get(id(module), "?")] = "off"
        return real_init(self, module)

    monkeypatch.setattr(CpuOffload, "pre_forward", pre_forward)
    monkeypatch.setattr(CpuOffload, "init_hook", init_hook)
    runs: list[tuple[str, dict]] = []
    pipe.transformer.transformer_blocks[0].register_forward_pre_hook(lambda m, a: runs.append(("global", dict(state))))
    pipe.subject_branch.blocks[0].register_forward_pre_hook(lambda m, a: runs.append(("subject", dict(state))))
    pipe.vae.decoder.register_forward_pre_hook(lambda m, a: runs.append(("decode", dict(state))))
    out = pipe("stories/story.json", **SIZE).images
    assert torch.equal(out, reference)
    kinds = {k for k, _ in runs}
    assert kinds == {"global", "subject", "decode"}
    for kind, seen in runs:
        if kind == "global":
            assert seen.get("transformer") == "on" and seen.get("text_encoder") == "off", seen
        elif kind == "subject":
            assert seen.get("subject_branch") == "on" and seen.get("transformer") == "on", seen
        else:
            assert seen.get("vae") == "on" and seen.get("transformer") == "off", seen
    assert state.get("subject_branch") == "off" and state.get("vae") == "off"  # all offloaded after the call
    assert pipe._execution_device == torch.device("cpu", 0) or pipe._execution_device.type == "cpu"


def test_sequential_cpu_offload_is_a_clear_error():
    pipe = make_pipeline()
    with pytest.raises(NotImplementedError, match="enable_sequential_cpu_offload: .* use enable_model_cpu_offload"):
        pipe.enable_sequential_cpu_offload(device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an accelerator to see real moves")
def test_model_cpu_offload_on_cuda_places_each_model_when_it_runs():
    pipe = make_pipeline()
    reference = pipe(STORY, **SIZE).images
    pipe.enable_model_cpu_offload(device="cuda")
    where: list[tuple[str, str, str]] = []

    def record(kind):
        return lambda m, a: where.append((kind, next(pipe.transformer.parameters()).device.type,
                                          next(pipe.text_encoder.parameters()).device.type))

    pipe.transformer.transformer_blocks[0].register_forward_pre_hook(record("global"))
    pipe.subject_branch.blocks[0].register_forward_pre_hook(
        lambda m, a: where.append(("subject", next(m.parameters()).device.type, "")))
    out = pipe(STORY, **SIZE).images
    assert {w for w in where if w[0] == "global"} == {("global", "cuda", "cpu")}
    assert {w for w in where if w[0] == "subject"} == {("subject", "cuda", "")}
    assert next(pipe.transformer.parameters()).device.type == "cpu"  # offloaded after the call
    assert torch.allclose(out, reference, atol=1e-3)


@pytest.mark.parametrize("steps", [1001, 3000])
def test_steps_beyond_the_schedule_fail_before_sampling(pipe, steps, monkeypatch):
    monkeypatch.setattr(pipe, "encode_prompt", lambda *a, **k: pytest.fail("encoded before the error"))
    with pytest.raises(ValueError, match=rf"num_inference_steps: expected an integer in 1\.\.1000 \(the scheduler's "
                                         rf"training timesteps\), got {steps}"):
        pipe(STORY, **{**SIZE, "num_inference_steps": steps})


def test_consistency_blocks_out_of_range_fail_before_sampling(pipe, monkeypatch):
    from lay2story_core.consistency import ConsistencyConfig

    monkeypatch.setattr(pipe, "encode_prompt", lambda *a, **k: pytest.fail("encoded before the error"))
    blocks = pipe.num_blocks
    with pytest.raises(ValueError, match=rf"^consistency\.blocks: \[{blocks}\] out of range for a transformer with "
                                         rf"{blocks} blocks"):
        pipe(STORY, **SIZE, mode="training_free", consistency=ConsistencyConfig(blocks=(0, blocks)))
    with pytest.raises(ValueError, match="^consistency: expected a ConsistencyConfig, got dict"):
        pipe(STORY, **SIZE, mode="training_free", consistency={"rate": 1.0})
