"""`python -m KidneyUSLib experiment NAME ...`: the thesis tables, reproduced on phantoms.

Each experiment lives in its own module exposing `configure(parser)` and `run(args)`:
  transfer  -> experiments_transfer  (Table 3.1: baselines, fine-tuning, transfer layers)
  template  -> experiments_template  (Table 4.2: template deformation)
Experiment modules keep heavy imports inside `run`, so listing them stays cheap; one whose
module is not installed is simply not offered.
"""

from __future__ import annotations

import importlib

EXPERIMENTS = {
    "transfer": ("KidneyUSLib.experiments_transfer", "Table 3.1 on phantoms: baselines, fine-tuning and transfer layers"),
    "template": ("KidneyUSLib.experiments_template", "Table 4.2 on phantoms: template deformation"),
}


def configure(parser) -> None:
    sub = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    for name, (module_name, help_text) in EXPERIMENTS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        experiment = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(experiment)
        experiment.set_defaults(experiment_run=module.run)


def run(args) -> int:
    return int(args.experiment_run(args) or 0)
