"""Does the curated subset help? Fine-tune the small LM on each selection with identical
hyperparameters and compare held-out losses with a random-k band (issue #9, `make eval`)."""
