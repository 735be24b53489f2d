"""Release matrix image publisher for Prefect's Docker images."""

__version__ = "0.1.0"
