"""The trainer: episodes, chat template, SFT, rollouts, reward, GRPO, evaluation (`python -m training.run`)."""
