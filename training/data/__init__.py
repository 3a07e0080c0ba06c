"""From shards to model inputs: reading splits through `index.json`, streaming episodes (turns,
targets, frame times), the chat template with labels, and the SFT dataset and collator."""
