"""The TensorBoard tags of the per-epoch metrics, which the hparams table and the Custom Scalars
page read back."""
from __future__ import annotations

#: epoch metric (the ``after_epoch`` dict) -> TensorBoard tag
EPOCH_TAGS = {
    "train_loss": "train/loss", "train_acc": "train/acc", "lr": "train/lr",
    "test_loss": "test/loss", "test_acc": "test/acc", "best_test_acc": "test/best_acc",
    "params": "model/params", "flops": "model/flops", "filters_kept": "model/filters_kept",
    "params_frac": "model/params_frac", "flops_frac": "model/flops_frac",
    "filters_kept_frac": "model/filters_kept_frac",
}
