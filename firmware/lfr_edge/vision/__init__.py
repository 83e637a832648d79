"""lfr-edge."""
