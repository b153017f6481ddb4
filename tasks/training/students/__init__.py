"""RGB students: one module per self-training objective."""
