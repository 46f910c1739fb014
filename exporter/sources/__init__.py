"""Sources: each reads one thing in the background, on its own interval and thread, and
publishes an immutable snapshot (``exporter.snapshots``) that collectors and the status page
render. The engine, disk, events, Hub and Harbor sources read Docker and the APIs; the
upstream and versions sources ask registries through ``exporter.registry``, and leave the
decisions to ``exporter.decisions``."""
