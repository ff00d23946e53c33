"""The codec layer: a public Transcoder with documented hooks; smart passthrough and chunked encoding on top."""
