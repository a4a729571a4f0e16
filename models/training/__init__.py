"""Training and evaluating equivalence classifiers: a fine-tuned pair classifier, or a head over MiniLM."""
