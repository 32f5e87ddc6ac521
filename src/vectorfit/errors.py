"""The command's one error for bad input: :class:`vf_core.errors.TaskError`, which backends raise too.

``CLIError`` is the name the command's modules use; it is the same class, so a task's error and the command's
are printed alike (one line, exit status 2).
"""

from vf_core.errors import TaskError

__all__ = ["CLIError"]

CLIError = TaskError
