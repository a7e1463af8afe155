"""The train step's work: datasets, the trainer and its loss, outputs, resuming, and the RLHF stages.

- config: the train step's settings (``TrainConfig``): stage, method, schedule, per-stage sub-sections.
- datasets: validated canonical records as Hugging Face datasets, one builder per kind of stage.
- loss: an SFTTrainer whose loss runs the LM head only on positions that carry a label.
- outputs: what a finished run leaves: metrics for its manifest, files to serve the model with.
- resume: checkpoints that survive a kill, and resuming from the last complete one.
- rlhf: trainers for the preference and RL stages (dpo, kto, orpo, rm, grpo, rloo, ppo).
- trainer: the trainer for a stage and the run around it: seeds, deterministic kernels, W&B.
"""

__all__ = ["config", "datasets", "loss", "outputs", "resume", "rlhf", "trainer"]
