"""Render: masks on the full-size frames, output naming; the codec layer (render/codec/) encodes, copies and joins."""
