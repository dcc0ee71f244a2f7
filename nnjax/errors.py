"""Errors meant for people: one sentence naming the problem and the fix."""


class NnjaxError(Exception):
    """Bad input or a state the user can fix. The CLI prints its message and exits 2.

    The message is one sentence: what is wrong and what to do about it.
    """


class DataNotFoundError(NnjaxError):
    """A data set or weight file cannot be found locally and cannot be downloaded."""


class TrainingDivergedError(NnjaxError):
    """The loss became NaN or infinite; the message names the step."""
