"""Training data shipped with the package: short idea/phrasing pairs for the embedded head."""
