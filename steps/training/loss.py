"""SFTTrainer whose loss projects through the LM head only the positions that carry a label.

With assistant-only loss about half the positions of a packed row have no next-token target,
yet TRL's fused head scores every position on CPU (it compacts only on Triton devices) and also
computes entropy and top-1 accuracy over the full vocabulary each step. ``SelectiveLossSFTTrainer``
asks the model for logits only at the trained positions (``logits_to_keep`` as a 1-D index tensor;
PEFT passes it through to the base model) and takes the same objective TRL does: the summed
cross-entropy of the trained tokens divided by ``num_items_in_batch`` (the trained tokens of the
whole accumulated batch), or by this micro-batch's own count when the Trainer passes none; times
the process count under ``average_tokens_across_devices``, as ``Trainer.compute_loss`` does. The
entropy and accuracy metrics are not computed; ``num_tokens`` is still logged.

Padding-free batches have batch dimension 1, which is where this applies; anything else (several
padded rows, prefix/prompt tuning whose logits include virtual tokens, MoE aux loss, label
smoothing, a custom loss, pre-shifted labels, DFT loss, sequence parallelism, callers that want
the outputs) goes to ``SFTTrainer.compute_loss`` unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from trl import SFTTrainer

IGNORE_INDEX = -100


def trained_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions p of a (1, L) label row whose next token is trained, and those targets ``labels[0, p + 1]``.

    The logit at p predicts token p + 1. Across a packed boundary the collator has already set the
    label at each ``position_ids == 0`` to -100, so no example's last position predicts the next's first.
    """
    shifted = labels[0, 1:]
    keep = (shifted != IGNORE_INDEX).nonzero().squeeze(1)
    return keep, shifted[keep]


def selective_lm_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
    """Mean cross-entropy over the trained tokens of a batch-1 ``inputs``, logits built only where trained.

    Args:
        model: a causal LM (or PEFT wrapper of one) accepting ``logits_to_keep`` as an index tensor.
        inputs: the collated batch (``input_ids``, ``labels`` of shape (1, L), position_ids...).
        num_items_in_batch: trained tokens of the whole accumulated batch, or None for this batch's own.
    """
    labels = inputs["labels"]
    keep, targets = trained_positions(labels)
    forward = {k: v for k, v in inputs.items() if k != "labels"}
    forward["use_cache"] = False
    logits = model(**forward, logits_to_keep=keep).logits  # (1, len(keep), vocab)
    targets = targets.to(logits.device)
    loss_sum = F.cross_entropy(logits[0].float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
    denom = targets.numel() if num_items_in_batch is None else num_items_in_batch
    return loss_sum / torch.as_tensor(denom, device=loss_sum.device).clamp(min=1)  # a label-free batch: 0, not 0/0


class SelectiveLossSFTTrainer(SFTTrainer):
    """SFTTrainer computing logits and loss only at trained positions of padding-free batches (module docstring)."""

    def _selective(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> bool:
        labels = inputs.get("labels")
        if return_outputs or not isinstance(labels, torch.Tensor) or labels.dim() != 2 or labels.size(0) != 1:
            return False
        if "shift_labels" in inputs or self.aux_loss_enabled or self.compute_loss_func is not None or self.label_smoother is not None:
            return False
        if getattr(self.args, "loss_type", "nll") != "nll":
            return False
        pc = getattr(self.accelerator, "parallelism_config", None)
        if pc is not None and (getattr(pc, "sp_enabled", False) or getattr(pc, "cp_enabled", False)):
            return False
        peft_config = getattr(self.accelerator.unwrap_model(model), "active_peft_config", None)
        return not getattr(peft_config, "is_prompt_learning", False)  # virtual tokens shift the logits

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        if not self._selective(model, inputs, return_outputs):
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss = selective_lm_loss(model, inputs, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())  # as Trainer/SFTTrainer: DDP averages
        mode = "train" if self.model.training else "eval"
        if mode == "train":  # the token count SFTTrainer logs as num_tokens
            if "attention_mask" in inputs:
                local = inputs["attention_mask"].sum()
            else:
                local = torch.tensor(inputs["input_ids"].size(1), device=inputs["input_ids"].device)
            self._total_train_tokens += self.accelerator.gather_for_metrics(local).sum().item() // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return loss
