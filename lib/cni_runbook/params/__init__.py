"""Validated params for every stage: schema, YAML layering, secret references."""

from .loader import DEFAULTS_FILE, LAB_FILE, PROJECT_ROOT, LoadedParams, ParamsError, load_params
from .schema import Params

__all__ = ["DEFAULTS_FILE", "LAB_FILE", "PROJECT_ROOT", "LoadedParams", "Params", "ParamsError", "load_params"]
