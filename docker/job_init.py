"""The training container's command runner, under tini: keeps the container up until the whole job has ended.

SageMaker stops a job (a spot reclaim, StopTrainingJob) with SIGTERM to PID 1. The toolkit's `train`
has no handler for it and dies at once, while the training script it started catches it, finishes the
step and saves its state. Under tini alone the container would end with `train`, and the kernel would
kill the script in the middle of that save. So `train` runs here as a job in a process group of its
own: SIGTERM and SIGINT are passed on to every process of that group, and this waits until all of
them have exited (at most model_lib.sagemaker.supervise.STOP_GRACE_SECONDS after a signal, then they are
killed), then exits with the toolkit's status: 128 + N when signal N ended it (143 for SIGTERM).
tini stays PID 1 and reaps the script once `train` has gone. The same wait runs local process mode
(model_lib.sagemaker.supervise.wait_for_job). Any command other than `train` is run directly:
`serve` (SageMaker hosting) replaces this process, so tini passes SIGTERM straight to its gunicorn.
"""

from __future__ import annotations

import os
import subprocess
import sys


def main(argv: list[str]) -> int:
    command = argv or ["train"]
    if command[0] != "train":
        os.execvp(command[0], command)
    from model_lib.sagemaker.supervise import wait_for_job

    return wait_for_job(subprocess.Popen(command, start_new_session=True))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
