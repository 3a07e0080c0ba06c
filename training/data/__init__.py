"""From shards to model inputs: reading splits through `index.json`, streaming episodes (turns,
targets, frame times), the chat template with labels, the SFT dataset and collator, offline
video data mixed into SFT, RL prompts (stretches with context) and the data summary."""
