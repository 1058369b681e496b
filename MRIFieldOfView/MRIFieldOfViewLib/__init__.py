"""MRIFieldOfView engine (no Slicer imports)."""
