"""Request bodies that refuse the fields they do not know instead of dropping them.

A field this server has never heard of is one whose meaning it cannot honour: a newer sampling parameter, another
server's extension, a typo (`max_new_token`). Dropping it would answer with output the client did not ask for, so
a body that carries one is answered 422 naming it (what OpenAI's own API does with an unrecognized argument).
A field sent as null is accepted: clients that serialize every parameter they know (TGI's `text-generation`
client, older huggingface_hub) send null for "not set", which is what leaving it out means.

Only the top-level bodies and TGI's `parameters` are strict. Message objects stay lenient: the openai SDK's
assistant messages, passed back as history, carry response-only fields (`refusal`, `annotations`, `audio`) that
say nothing about how to generate.
"""
from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, model_validator


class StrictBody(BaseModel):
    """A request body (or TGI's `parameters`): unknown fields with a value are a 422, null ones are accepted."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _refuse_unknown_fields(self) -> Self:
        unknown = unknown_fields(self.model_extra)
        if unknown:
            known = ", ".join(sorted(type(self).model_fields))
            raise ValueError(
                f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: this server does "
                f"not implement {'them' if len(unknown) > 1 else 'it'} and does not ignore what it cannot honour; "
                f"remove {'them' if len(unknown) > 1 else 'it'} (fields known here: {known})"
            )
        return self


def unknown_fields(extra: dict[str, Any] | None) -> list[str]:
    """The names of the extra fields that carry a value (null means not set), sorted."""
    return sorted(name for name, value in (extra or {}).items() if value is not None)
