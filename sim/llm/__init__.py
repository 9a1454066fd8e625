"""The LLM replica's logic: requests, paged KV cache, schedulers (no time, no SimPy)."""
