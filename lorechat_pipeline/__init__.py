"""LoreChat Pipeline: documents in a folder or S3 bucket → a vector index kept in step with them."""

import os

# Set before anything imports unstructured or huggingface: no telemetry pings, no hub downloads.
# Models and the spaCy pipeline come from installed packages only.
for _name, _value in (
    ("DO_NOT_TRACK", "1"),
    ("HF_HUB_OFFLINE", "1"),
    ("TRANSFORMERS_OFFLINE", "1"),
):
    os.environ.setdefault(_name, _value)
