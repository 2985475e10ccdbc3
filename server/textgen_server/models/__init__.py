"""Model loading (hub, safetensors), the architecture registry, paged attention and the KV cache."""
