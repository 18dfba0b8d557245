"""Shared test setup: offline, quiet, deterministic."""

import os

# Before anything imports wandb or albumentations: never touch the network.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _torch_threads_and_seed():
    torch.manual_seed(0)
    yield
