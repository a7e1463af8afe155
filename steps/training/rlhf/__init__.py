"""Trainers for the preference and RL stages of train, written against TRL 1.16.

- build: the stage list, the data each stage needs, and ``build_stage_trainer``, one switch on the stage.
- common: what every builder shares: TRL probing, the stage datasets, the reference model.
- online: the online RL builders (grpo, rloo, ppo where TRL ships it) and their reward model.
- preference: the offline preference builders (dpo, kto, orpo, rm).
"""

__all__ = ["build", "common", "online", "preference"]
