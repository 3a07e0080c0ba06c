"""Multi-turn GRPO: rollouts, the PAUC reward and its terms, the LLM judge, the clipped token loss,
and the training loop that ties them together."""
