"""KidneyUS engine (no Slicer imports)."""
