"""Programs that run away from the van: the command centre's `lfr-watchlist`, the officer's `lfr-handset`, and
the offline photo tools (`lfr-photos`). They use the contracts and, for enrolment and photos, the van's own
vision pipeline, so a bundle is enrolled with exactly the model the unit runs."""
