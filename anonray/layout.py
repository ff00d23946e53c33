"""Names and modes of the run state an output folder holds (``OUTPUT/_anonray/``)."""

STATE_DIR_NAME = "_anonray"
"""The run state beside the outputs: tables, manifests, review sheets, temporary files."""
TMP_DIR_NAME = "tmp"
"""Outputs being written, under the state folder; each is moved into place once complete."""
MANIFEST_DIR_NAME = "manifests"
REVIEW_DIR_NAME = "review"
REGIONS_TABLE = "regions"
PRIVATE_DIR_MODE = 0o700
"""Owner only: footage, regions and Ray's spilled objects are never readable by other accounts."""
