"""The command centre: enrol subjects, build, sign, seal, publish and close watchlist bundles."""
