"""Errors raised by the coordinator: one hierarchy, each class one kind of bad input or state.

Every message names what was wrong and how to fix it; the API maps these to 4xx answers.
"""


class SlmfleetError(Exception):
    """Base class of every error the coordinator raises on purpose."""


class JobSpecError(SlmfleetError):
    """A job spec is malformed or names something that does not exist."""


class DatasetError(SlmfleetError):
    """A dataset is missing, malformed or fails its checksum."""


class ModelError(SlmfleetError):
    """A model file is missing, not GGUF, or not registered."""


class ConflictError(SlmfleetError):
    """The request clashes with the current state (e.g. removing a model a job still uses)."""


class SchemaError(SlmfleetError):
    """The store was made by another version of slmfleet: older without migrations and
    lacking tables or columns, or newer (a schema revision this version does not know)."""


class StoreError(SlmfleetError):
    """The store's database URL is wrong, or its server or file cannot be reached."""


class NotFoundError(SlmfleetError):
    """An API object (job, node, model) with that id does not exist."""
