"""Code shared by the SegTune modules (no Qt)."""
