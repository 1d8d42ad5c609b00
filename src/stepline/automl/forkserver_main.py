"""Imported once by the fork server of the trial workers: runs the driver's main script there.

Every worker that multiprocessing starts runs the driver's main script as ``__mp_main__``
(its imports, its definitions) before the worker's code, unless that script is already
loaded in the process it was forked from. Python 3.11's fork server means to preload it
(``"__main__"`` in the preload list) but never receives the script's path (the key it
looks for is not the one ``spawn.get_preparation_data`` writes), so each worker paid the
script's imports again — measured: 350–900 ms a worker for a script importing Optuna and
Dask. :mod:`.workers` puts the path and ``sys.argv`` in ``STEPLINE_AUTOML_MAIN`` (JSON)
while it starts the server, and this module loads the script the way a worker would.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from multiprocessing import process, spawn

MAIN_VARIABLE = "STEPLINE_AUTOML_MAIN"


def describe_main() -> str:
    """The value of :data:`MAIN_VARIABLE` for this process ("" when its main is not a script)."""
    path = spawn.get_preparation_data("stepline-automl-worker").get("init_main_from_path")
    return json.dumps({"path": path, "argv": sys.argv}) if path else ""


def _load_main(description: str) -> None:
    main = json.loads(description)
    process.current_process()._inheriting = True  # what multiprocessing sets for a child's main
    try:
        sys.argv = main["argv"]  # as each worker sets it before running the script
        spawn.import_main_path(main["path"])
    except BaseException as error:  # noqa: BLE001 - the workers then load the script themselves
        logging.getLogger(__name__).warning("stepline.automl: the fork server could not preload %s: %s",
                                            main["path"], error)
    finally:
        del process.current_process()._inheriting


if os.environ.get(MAIN_VARIABLE):
    _load_main(os.environ[MAIN_VARIABLE])
