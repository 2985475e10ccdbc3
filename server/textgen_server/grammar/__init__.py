"""Constrained decoding (TGI's `grammar`, OpenAI's `response_format` and `tools`), torch-free.

The engine is llguidance (chosen by measurement, see server/README.md "Constrained decoding"). The router turns a
request's grammar into llguidance's grammar text and compiles it once against the tokenizer (compile.py, cached,
off the event loop), so that a bad or oversized grammar is a 422 before anything is queued. The shard builds one
matcher per constrained sequence from that text and masks its logits at every step
(textgen_server.sampling.grammar). tools.py turns OpenAI tools into a grammar and the constrained output back
into tool calls.
"""
