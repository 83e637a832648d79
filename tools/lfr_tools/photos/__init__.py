"""Offline photo tools: detect and embed a folder of photos, or a list into an npz."""
