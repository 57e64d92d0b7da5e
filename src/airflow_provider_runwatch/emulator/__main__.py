"""``python -m airflow_provider_runwatch.emulator``: same as the ``runwatch-emulator`` command."""

from __future__ import annotations

import sys

from airflow_provider_runwatch.emulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
