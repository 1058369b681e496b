"""HPOTools engine (no Slicer imports)."""
