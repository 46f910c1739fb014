"""The HTTP side: the server, the exporter-toolkit web config, and the pages it serves."""
