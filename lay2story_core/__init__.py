"""Lay2Story core: schema, masked attention, models, pipelines and loaders. Never imports ComfyUI."""

__version__ = "0.1.0"
