"""User-facing errors: each carries a one-line message that names the file or value at fault.

The CLI prints the message and exits with status 2; any other exception is a bug.
"""


class OssiclassError(Exception):
    """A problem with something the user gave us (a file, an option, a model)."""


class ImageReadError(OssiclassError, OSError):
    """An image file that is missing, unreadable, corrupt, or outside the supported limits."""


class BadInputError(OssiclassError, ValueError):
    """An option, data set or layout that cannot be used as given."""


class BadModelError(OssiclassError, ValueError):
    """A model file that is not an ossiclass bundle or does not fit this version."""
