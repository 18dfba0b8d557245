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


@pytest.fixture(scope="session")
def embedded_data_root(tmp_path_factory):
    """The three embedded datasets, generated once per session outside the repository."""
    from datamodules.embedded import EMBEDDED, ensure_generated

    root = tmp_path_factory.mktemp("embedded-data")
    for spec in EMBEDDED.values():
        ensure_generated(spec, root)
    return root


@pytest.fixture(autouse=True)
def _embedded_data_env(request, monkeypatch):
    """Tests that build DataModules with data_dir=None read the session's embedded data."""
    if "embedded_data_root" in request.fixturenames or request.node.get_closest_marker("embedded"):
        from datamodules.embedded.store import ENV_VAR

        monkeypatch.setenv(ENV_VAR, str(request.getfixturevalue("embedded_data_root")))
