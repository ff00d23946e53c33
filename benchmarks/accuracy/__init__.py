"""Detection accuracy harness: labelled stills (and, later, synthetic video) against the detectors."""
