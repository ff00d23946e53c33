"""Storage: inputs and outputs on object stores (URIs), opening media files, streamed sha256."""
