"""HPO studies: durable storage, crash-safe runners (local or Ray), installing the winner.

See docs/HPOTools-studies.md. Modules: ``storage`` (the SQLite study database), ``spec`` (study
specs), ``runner`` (the trial loop), ``executors`` (local trial processes, Ray), ``control``
(background runner, cancel), ``status``, ``install``, ``report``, ``commands`` (the CLI).
"""
