"""lfr-edge: the software of a live-facial-recognition van unit."""

__version__ = "0.1.0"
