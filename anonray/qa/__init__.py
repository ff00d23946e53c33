"""QA: each written output checked against its input before it is published; mask statistics and flags."""
