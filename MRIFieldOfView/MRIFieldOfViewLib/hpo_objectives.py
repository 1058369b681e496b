"""Imported by HPOToolsLib.objectives.get_objective("MRIFieldOfView:..."): registers our objectives."""

from .objective import register

register()
