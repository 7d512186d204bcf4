"""What every neural-network model module shares: its training keys (cropflow.training reads them)."""

from __future__ import annotations


def training_defaults(batch_size: int = 256, weight_decay: float = 0.0) -> dict[str, object]:
    """Training keys of a keras model (SCIENCE.md: Adam 1e-3, early stopping): epochs, batch_size, learning_rate,
    patience, imbalance (none | class_weights | oversample | mixup), mixed_precision, weight_decay (AdamW)."""
    return {"epochs": 50, "batch_size": batch_size, "learning_rate": 0.001, "patience": 8, "imbalance": "none",
            "mixed_precision": False, "weight_decay": weight_decay}
