"""Registries: the client every registry request goes through (transport, auth and the
request policy), what registries serve (manifests, platforms), and the content-addressed
documents kept in the state store. Features decide what to ask; this package decides whether
and when."""
