"""Errors a user can cause. Each names where, what, and what was expected.

The CLI turns these into one line on stderr and exit code 2; anything else keeps its traceback.
"""

from __future__ import annotations


class ModelLibError(ValueError):
    """Base class for errors caused by bad input (files, params, hyperparameters)."""


class ConfigError(ModelLibError):
    """A params file, section, key or value is missing or wrong."""


class DataError(ModelLibError):
    """A review source, split or encoded file is missing, malformed or empty."""


class EmbeddingError(ModelLibError):
    """A GloVe file or embedding matrix is missing, malformed or does not fit the vocabulary."""


class TrainingDiverged(ModelLibError):
    """The loss became NaN or infinite during training (a learning rate too large, data out of scale).

    Nothing is saved from such a run: a model that predicts NaN must not ship.
    """


class OutputError(ModelLibError):
    """An output cannot be written there: a folder that is a file, a file that is a folder, a folder
    this process may not write, a full disk. The message names the path and the cause."""


class SageMakerEnvironmentError(ModelLibError):
    """The SageMaker container contract (SM_* variables, channels, hyperparameters) is not met."""


class FolderLockError(ModelLibError):
    """A folder this process must have to itself (a training's checkpoint folder) is held by
    another process, which the message names, or cannot hold its lock file."""


class TrainingInterrupted(Exception):
    """Training stopped on a signal (SIGTERM from a spot reclaim, Ctrl-C) after saving its state.

    Not a user error: the run resumes where it stopped when started again with the same checkpoint
    folder. ``exit_code`` follows the shell convention (128 + signal number).
    """

    def __init__(self, signal_number: int, checkpoint: str | None) -> None:
        import signal

        name = signal.Signals(signal_number).name
        where = f"state saved in {checkpoint}; run again to resume" if checkpoint else "no checkpoint folder"
        super().__init__(f"training stopped by {name}: {where}")
        self.signal_number = signal_number
        self.checkpoint = checkpoint

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number


class ClusterError(Exception):
    """A multi-host job lost a host (it died, or stopped answering) or could not form.

    Not a user error: the message names this host, the step and the runtime's own reason. A restarted
    job resumes from the coordinator's last checkpoint.
    """
