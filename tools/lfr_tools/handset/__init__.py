"""The officer's handset: pair with a unit, receive and decrypt alerts, send signed decisions."""
