"""Random-number-generator states in checkpoints, so a resumed run draws what the
uninterrupted run would have drawn."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

__all__ = ["RNGStateCallback"]


class RNGStateCallback(pl.Callback):
    """Save torch (CPU and every CUDA device), numpy and Python RNG states in each
    checkpoint and restore them on resume.

    Lightning's checkpoints hold no RNG state. Dropout, the augmentations of a
    DataLoader without workers, and anything else drawing from the global generators
    would otherwise differ after a resume. The states saved are rank 0's; under DDP
    every rank is seeded alike and draws alike unless its code branches on the rank.
    Together with the DataModules' epoch-seeded samplers this makes a resume at an epoch
    boundary bit-exact on CPU (mid-epoch, the epoch's batches restart: see the README).
    """

    def state_dict(self) -> dict[str, Any]:
        # Only tensors and plain Python values: checkpoints must load with weights_only=True.
        numpy_state = np.random.get_state(legacy=False)
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                "pos": int(numpy_state["state"]["pos"]),
                "has_gauss": int(numpy_state["has_gauss"]),
                "gauss": float(numpy_state["gauss"]),
            },
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        saved = state_dict["numpy"]
        np.random.set_state(("MT19937", saved["key"].numpy().astype(np.uint32), saved["pos"], saved["has_gauss"], saved["gauss"]))
        random.setstate(state_dict["python"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
