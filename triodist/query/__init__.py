"""One query's life: the pipeline from the rules to the answer."""
