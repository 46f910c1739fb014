"""Decisions: pure functions of what the engine and the registries said. No threads, no I/O:
drift of a tag and of a container, and what counts as a newer version."""
