"""Settings for the whole suite: hypothesis runs without per-example deadlines, since the
machines that run the suite are shared and noisy, and no test asserts a time."""

from hypothesis import settings

settings.register_profile("slmfleet", deadline=None)
settings.load_profile("slmfleet")
