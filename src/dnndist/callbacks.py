"""``dnndist.Recorder`` where users already train: a PyTorch Lightning callback
(``pip install dnndist[lightning]``).

    callback = dnndist.callbacks.RecorderCallback("runs/exp/adam-seed0", group="adam", seed=0, inputs=probe_loader)
    trainer = lightning.Trainer(max_epochs=10, callbacks=[callback])
    trainer.fit(module, train_loader, val_loader)

It records before the first step, after every epoch (or every ``every`` steps) and closes the run
when fitting ends; an exception closes it too, keeping what was recorded. The loss of each step
(``training_step``'s returned loss) makes the mean train loss; the epoch's logged metrics
(``trainer.callback_metrics``: ``val_loss`` is split valid, metric loss) go into metrics.csv.
Only the global rank 0 process records.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from dnndist.recorder import Recorder


class RecorderCallback(Callback):
    """A ``dnndist.Recorder`` of the LightningModule being fitted (arguments as ``Recorder``'s,
    but the model and the optimiser, which the trainer gives)."""

    def __init__(self, out: str | Path, **recorder_options: Any) -> None:
        super().__init__()
        self.out, self.options = Path(out), recorder_options
        self.recorder: Recorder | None = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.global_rank != 0:
            return
        optimizers = getattr(trainer, "optimizers", None) or [None]
        self.recorder = Recorder(pl_module, self.out, optimizer=optimizers[0], **self.options)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.recorder is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        self.recorder.step(loss=loss if isinstance(loss, (torch.Tensor, float, int)) else None)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.recorder is None:
            return
        metrics = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if not torch.is_tensor(value) or value.numel() == 1
        }
        self.recorder.epoch(**metrics)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.recorder is not None:
            self.recorder.close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.recorder is not None:
            self.recorder.close(f"failed: {type(exception).__name__}")
