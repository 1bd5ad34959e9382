#!/usr/bin/env python3
"""Django's command line for meshsite, runnable as `./manage.py …` from any shell.

`make run` installs everything into the project's `.venv`; a shell where it is not activated
would start a Python without Django. So, when `.venv` exists and this is not already its
Python, the script starts again under `.venv/bin/python` with the same arguments. Another
installation (no `.venv`, e.g. a container image) runs as it is.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV_PYTHON = HERE / ".venv" / "bin" / "python"


def _in_project_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV_PYTHON.parent.parent.resolve()


def _reexec_in_project_venv() -> None:
    # The guard variable stops a loop should .venv's Python somehow report another prefix.
    if VENV_PYTHON.exists() and not _in_project_venv() and not os.environ.get("MESHSITE_REEXEC"):
        os.environ["MESHSITE_REEXEC"] = "1"
        os.execv(VENV_PYTHON, [str(VENV_PYTHON), str(HERE / "manage.py"), *sys.argv[1:]])


def main() -> None:
    _reexec_in_project_venv()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meshsite.settings")
    try:
        from django.core.management import execute_from_command_line
    except ImportError:
        sys.exit(f"Django is not installed for {sys.executable}: run `make run` once (it creates .venv)")
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
