"""Shared fixtures: demo snapshots built once per session into a temporary MODELS_DIR, the catalog,
and an engine manager on the CPU."""

from __future__ import annotations

import os

# Before diffusers/transformers are imported: the tests must never reach the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest
import torch

from flexy_worker.catalog import load_catalog
from flexy_worker.demo_snapshots import build_all, quiet_libraries

quiet_libraries()
# The demo models are tiny: with more than one thread, synchronisation costs more than it saves,
# and on a busy shared runner it costs far more.
torch.set_num_threads(int(os.environ.get("FLEXY_TEST_TORCH_THREADS", "1")))

GIB = 1024**3


@pytest.fixture(scope="session")
def catalog():
    return load_catalog()


@pytest.fixture(scope="session")
def demo_models_dir(tmp_path_factory, catalog) -> Path:
    models_dir = tmp_path_factory.mktemp("models")
    build_all(models_dir, catalog=catalog)
    return models_dir


@pytest.fixture(scope="session")
def make_manager(demo_models_dir, catalog):
    """A factory for engine managers over the demo snapshots (CPU, float32)."""
    from flexy_worker.engines import EngineManager

    def make(budget_bytes: int = GIB, text_encoder_mode: str = "local", **kwargs) -> EngineManager:
        return EngineManager(catalog, demo_models_dir, "cpu", torch.float32, budget_bytes, text_encoder_mode, **kwargs)

    return make


@pytest.fixture(scope="session")
def manager(make_manager):
    """One manager for tests that only generate: engines load once for the whole session."""
    return make_manager()
