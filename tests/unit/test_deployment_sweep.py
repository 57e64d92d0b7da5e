"""The suite's own clean-up (tests/deployment.py): :func:`sweep` finds a deployment's orphans by their working
directory, not only by ``AIRFLOW_HOME``, which a process title written over the environment can hide."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

from tests.deployment import sweep

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_sweep_kills_an_orphan_by_its_working_directory_and_leaves_others(tmp_path: Path) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    (home / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW_HOME"}  # nothing in its environment says whose
    orphan = subprocess.Popen(SLEEPER, cwd=home / "sub", env=env, start_new_session=True)
    bystander = subprocess.Popen(SLEEPER, cwd=elsewhere, env=env, start_new_session=True)
    try:
        sweep(home)
        # sweep waits for what it killed (psutil reaps its own children), so the pid is gone, not a zombie.
        assert not psutil.pid_exists(orphan.pid), "the orphan in the deployment's home was killed"
        assert bystander.poll() is None, "a process outside the deployment's home is left alone"
    finally:
        for proc in (orphan, bystander):
            proc.kill()
            proc.wait(timeout=10)
