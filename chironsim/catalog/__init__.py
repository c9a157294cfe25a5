"""GPUs and models as data: YAML files with a source per entry, loaded into frozen records."""

from chironsim.catalog.registry import get_gpu, get_model, list_gpus, list_models
from chironsim.catalog.specs import GPU, Model

__all__ = ["GPU", "Model", "get_gpu", "get_model", "list_gpus", "list_models"]
