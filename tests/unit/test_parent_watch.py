"""A stage command whose launcher dies, with real processes: under DVC it is sent SIGTERM (and so
saves and stops); started by hand it lives on (``nohup model-lib train &`` survives its shell)."""

import os
import subprocess
import sys
import textwrap

import pytest

from model_lib.parent_watch import DVC_STAGE_ENV
from tests.conftest import REPO

# The stage command reports what reached it; it says when it is ready by making a file.
COMMAND = textwrap.dedent(
    """
    import pathlib, signal, sys, time
    from model_lib.parent_watch import stopping_when_parent_goes
    signal.signal(signal.SIGTERM, lambda *_: (print("SIGTERM", flush=True), sys.exit(0)))
    with stopping_when_parent_goes(poll=0.05) as watching:
        print(f"watching={watching}", flush=True)
        pathlib.Path(sys.argv[1]).touch()
        time.sleep(1.5)
    print("lived on", flush=True)
    """
)
# The launcher starts the stage command and leaves as soon as the command is ready.
LAUNCHER = textwrap.dedent(
    """
    import os, shlex, subprocess, sys, time
    command = [sys.executable, "-c", sys.argv[1], sys.argv[2]]
    if sys.argv[3] == "shell":  # as DVC runs it with /bin/sh (dash): the shell stays between, no exec
        command = ["/bin/sh", "-c", shlex.join(command) + "; :"]
    subprocess.Popen(command)
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.01)
    """
)


@pytest.mark.parametrize(
    ("under_dvc", "through", "expected"),
    [
        (True, "direct", "watching=True\nSIGTERM\n"),
        (True, "shell", "watching=True\nSIGTERM\n"),
        (False, "direct", "watching=False\nlived on\n"),
        (False, "shell", "watching=False\nlived on\n"),
    ],
)
def test_a_stage_command_is_stopped_when_its_launcher_dies_only_under_dvc(under_dvc, through, expected, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != DVC_STAGE_ENV}
    env["PYTHONPATH"] = str(REPO)
    if under_dvc:
        env[DVC_STAGE_ENV] = "train"
    # The pipe reaches EOF once the stage command (which inherits it) has ended too.
    command = [sys.executable, "-c", LAUNCHER, COMMAND, str(tmp_path / "ready"), through]
    launched = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, timeout=60)
    assert launched.stdout == expected
