"""Text stages: timestamped segments from source text or captions, dialogue writing and validation.
Owns the prompt files (`curation/text/prompts/<name>.vN.md`) and the dialogue grounding rules."""
