"""Typed errors, each mapped to one documented process exit code (docs/architecture.md)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1
    CONFIG = 2
    QUALITY_GATE = 3
    SOURCE_UNAVAILABLE = 4
    STORAGE = 5
    WAREHOUSE = 6
    SOURCE_INVALID = 7
    MISSING_INPUT = 8
    CONFLICT = 9


class PipelineError(Exception):
    """Base of every expected failure; carries its exit code."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class ConfigError(PipelineError):
    exit_code = ExitCode.CONFIG


class QualityGateError(PipelineError):
    exit_code = ExitCode.QUALITY_GATE


class SourceUnavailableError(PipelineError):
    exit_code = ExitCode.SOURCE_UNAVAILABLE


class StorageError(PipelineError):
    exit_code = ExitCode.STORAGE


class ObjectNotFoundError(StorageError):
    """A key that was expected is absent (callers often turn this into MissingInputError)."""


class WarehouseError(PipelineError):
    exit_code = ExitCode.WAREHOUSE


class SourceInvalidError(PipelineError):
    exit_code = ExitCode.SOURCE_INVALID


class MissingInputError(PipelineError):
    exit_code = ExitCode.MISSING_INPUT


class WriteConflictError(PipelineError):
    """A write-once object exists with different bytes; it is never overwritten."""

    exit_code = ExitCode.CONFLICT
