"""`make bench`: how fast Seam's engines answer on the default model, measured side by side in one run."""
