"""``training.ema.ModuleEMA``: one average per trained module, swapped in and out for validation, saved and loaded
in ``save_pretrained`` form."""

from __future__ import annotations

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from training.ema import ModuleEMA


class Tiny(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(width, width)


def _state(module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_averages_follow_each_module_and_swap_in_and_out(tmp_path):
    """ModuleEMA == one diffusers EMAModel per module, fed each module's own parameters."""
    from diffusers.training_utils import EMAModel

    a, b = Tiny(), Tiny(width=2)
    ema = ModuleEMA({"a": a, "b": b}, decay=0.9)
    plain = {"a": EMAModel(list(a.parameters()), decay=0.9), "b": EMAModel(list(b.parameters()), decay=0.9)}
    for _ in range(3):
        with torch.no_grad():
            for module in (a, b):
                for p in module.parameters():
                    p.add_(torch.randn_like(p))
        ema.step()
        plain["a"].step(a.parameters())
        plain["b"].step(b.parameters())
    live = {"a": _state(a), "b": _state(b)}
    ema.store()
    ema.copy_to()
    for name, module in (("a", a), ("b", b)):
        want = [p.clone() for p in plain[name].shadow_params]
        got = list(module.parameters())
        assert all(torch.equal(g, w) for g, w in zip(got, want)), name
        assert not all(torch.equal(module.state_dict()[k], live[name][k]) for k in live[name])  # an average
    ema.restore()
    assert all(torch.equal(v, live["a"][k]) for k, v in a.state_dict().items())
    assert all(torch.equal(v, live["b"][k]) for k, v in b.state_dict().items())
    # save_pretrained / load round trip (a checkpoint's <name>_ema/)
    ema.save_pretrained(str(tmp_path), "a")
    assert (tmp_path / "a_ema" / "config.json").is_file()
    fresh = Tiny()
    other = ModuleEMA({"a": fresh}, decay=0.9)
    other.load(str(tmp_path), "a")
    other.copy_to()
    assert all(torch.equal(g, w) for g, w in zip(fresh.parameters(), plain["a"].shadow_params))
    assert ema.names == ("a", "b") and other.names == ("a",)
