"""The serve step's work: an OpenAI-compatible chat API over one model folder.

- app: the FastAPI app: bearer auth, the routes, streaming, each request's prompt and budget.
- batching: the batch scheduler: concurrent requests decoded together, each with its own settings.
- backend: choosing and loading an engine for a model folder (full or unmerged PEFT adapter).
- chat: the OpenAI chat-completions wire format: requests, errors, replies and stream chunks.
- config: the serve step's settings (``ServeConfig``).
- engines: the transformers engine (CPU or GPU) and the vLLM engine (CUDA, when installed).
- folder: what a model folder must hold to be served, read from the folder alone; ``ServeError``.
- generation: one generation as the server runs it: settings, result, thread, stop strings.
- prompt: a request's prompt ids, special-token text in messages kept as text, built outside the generation slots.
- tools: whether a chat template reads tools, a forced call's schema, and tool calls read back from a reply.
"""

__all__ = ["app", "backend", "batching", "chat", "config", "engines", "folder", "generation", "prompt", "tools"]
