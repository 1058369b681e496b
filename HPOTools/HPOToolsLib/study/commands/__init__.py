"""`python -m HPOToolsLib run|resume|status|cancel|list|export|install|report` (one module each)."""
