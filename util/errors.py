"""One exception type for every problem a user can fix (bad paths, bad files, bad options)."""


class UserInputError(Exception):
    """Raised with a one-line message naming the file and the problem; CLIs print it and exit 2."""
