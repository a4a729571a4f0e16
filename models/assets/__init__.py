"""Model files shipped inside the package (the embedded default head)."""
