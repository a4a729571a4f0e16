"""Model backends: equivalence classifiers and quality sources behind two small interfaces."""
