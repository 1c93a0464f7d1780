"""Named errors of the operator. Each one maps to a status condition reason, never to a crash."""

from __future__ import annotations


class OperatorError(Exception):
    """Base of the errors a sync turns into status (``reason`` is the condition reason)."""

    reason = "Error"


class InvalidSpec(OperatorError):
    """The resource's spec cannot be acted on; ``problems`` says why, one line each."""

    reason = "InvalidSpec"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class KafkaUnavailable(OperatorError):
    """Kafka did not answer (in time) a metadata, offsets or fetch request."""

    reason = "KafkaUnavailable"


class TopicNotFound(OperatorError):
    """The input topic does not exist (yet): nothing to measure lag against."""

    reason = "TopicNotFound"


class ScaleTargetUnavailable(OperatorError):
    """The StatefulSet's scale subresource could not be read or written (API unreachable, 5xx, timeout)."""

    reason = "ScaleTargetUnavailable"


class ScaleTargetNotFound(ScaleTargetUnavailable):
    """The StatefulSet named by ``scaleTargetRef`` does not exist."""

    reason = "ScaleTargetNotFound"


class ScaleTargetForbidden(ScaleTargetUnavailable):
    """The operator's ServiceAccount may not read or scale that StatefulSet (RBAC)."""

    reason = "ScaleTargetForbidden"
