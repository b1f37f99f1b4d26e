"""idr — identifier registration and resolution for the industrial internet (Handle protocol)."""

__version__ = "0.1.0"
