"""Expected failures: what a user can fix (a bad option value, a missing or unreadable input, an output folder in the
way). Raised on purpose with a one-line message; `cmbert` prints it as `cmbert: error: <message>` and exits 2. Any
other exception is a bug and keeps its traceback.

`UserError` is a ValueError (and `MissingInput` / `OutputInTheWay` are also the OSErrors they stand for), so callers
that caught those before still do. `ConfigError` (cmbert.core.config), `ReadError` (cmbert.core.io) and `FetchError`
(cmbert.data.wheel_data) are UserErrors.
"""

from __future__ import annotations


class UserError(ValueError):
    """A failure the user can fix; the message is one line that says what and, where it helps, what to do."""


class MissingInput(UserError, FileNotFoundError):
    """An input file or folder the command was given does not exist or is not what it should be."""


class OutputInTheWay(UserError, FileExistsError):
    """The output path holds something the command will not overwrite."""
