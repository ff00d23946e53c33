"""The one mode of every folder that holds personal data: run state, regions, staged inputs, Ray scratch."""

PRIVATE_DIR_MODE = 0o700
"""Owner only: footage, regions and Ray's spilled objects are never readable by other accounts."""
