"""docker-hygiene-exporter: Prometheus metrics for Docker image hygiene."""

__version__ = "0.1.0"
