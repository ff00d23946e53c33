"""Review corrections: the corrections file, the mask plan edited by it, and `anonray apply`."""
