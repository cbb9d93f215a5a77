"""One exception tree for actorflow: every error a user can see derives from ActorflowError."""

from __future__ import annotations


class ActorflowError(Exception):
    """Base of every actorflow error."""


class ApplicationError(ActorflowError):
    """The app module or its pipeline is wrong; raised at build time, before anything runs."""


class ConfigError(ActorflowError):
    """A flag, config file or environment value is wrong or not supported."""


class ClusterError(ActorflowError):
    """The cluster could not start, or a worker could not join it."""


class FrameError(ActorflowError):
    """A TCP peer sent a frame that cannot be read (oversize, garbage)."""
