"""Exception types of neurosim.

Every error a user can cause derives from :class:`NeurosimError` and from the matching
built-in, so ``except ValueError`` keeps working for code that does not know neurosim.
"""

from __future__ import annotations


class NeurosimError(Exception):
    """Base class of every error neurosim raises on purpose."""


class CircuitError(NeurosimError, ValueError):
    """A circuit, stimulus, protocol or file is invalid.

    Parameters
    ----------
    message : str
        What is wrong, what was found and what is allowed.
    path : str, optional
        Key path of the offending value, e.g. ``"synapses[3].pre"``.
    file : str, optional
        File the value came from.
    line : int, optional
        1-based line of the value in ``file``.
    """

    def __init__(self, message: str, *, path: str | None = None,
                 file: str | None = None, line: int | None = None):
        self.message = message
        self.path = path
        self.file = file
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        key = f"{self.path}: " if self.path else ""
        return f"{where}{key}{self.message}"

    def located(self, file: str | None, line: int | None) -> "CircuitError":
        """The same error, placed in ``file`` at ``line``."""
        return CircuitError(self.message, path=self.path, file=file, line=line)


class SimulationError(NeurosimError, RuntimeError):
    """A run failed numerically (non-finite or runaway potential, step-size underflow)."""


class ResultFileError(NeurosimError, OSError):
    """A result file cannot be written or read."""


class RestWarning(NeurosimError, RuntimeWarning):
    """A run that should start at rest found no stable rest and starts elsewhere."""


class StorageError(ResultFileError):
    """Writing a result failed while the run went: the disk is full, or an I/O error.

    What was written before is kept where it is readable (the message says where)."""


class ResourceError(NeurosimError, ValueError):
    """A run would need more memory or disk than there is; it is refused before it starts."""
