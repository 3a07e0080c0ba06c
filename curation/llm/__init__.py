"""The one LLM client (openai | vllm | replay backends, bounded async, retries, disk cache) and the
parsing of its JSON answers; also the tool that rebuilds the sample's replay file."""
