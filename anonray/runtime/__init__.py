"""The Ray side of a run: the driver, its ledger, Ray tasks and actors, the dataset chain, resources, progress."""
