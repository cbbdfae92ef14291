"""Why a document produced no chunks: a stable reason code plus a human-readable detail."""

REASONS = frozenset(
    {
        "empty",
        "encrypted",
        "unsupported_type",
        "corrupt",
        "no_text",
        "too_large",
        "timeout",
        "parser_crashed",
        "memory_exceeded",
        # Per-document limits (core/parsing/limits.py): the detail names the setting.
        "decompression_bomb",
        "too_much_text",
        "too_many_chunks",
    }
)

MAX_DETAIL_CHARACTERS = 500


class DocumentRejected(Exception):
    """A document that cannot be indexed. `reason` is one of REASONS; callers store both fields."""

    def __init__(self, reason: str, detail: str):
        if reason not in REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        detail = " ".join(detail.split())[:MAX_DETAIL_CHARACTERS]
        # Both fields go to Exception.args so the exception survives pickling between processes.
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"
