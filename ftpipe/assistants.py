"""Assistants: a catalogue file merged with the endpoint's own list, and applying one by id.

The catalogue (`data/assistants.json`, shipped as package data, or FTPIPE_ASSISTANTS_FILE) works
on any endpoint; the
Assistants API list is added where the endpoint offers one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import openai

from ftpipe import resources
from ftpipe.errors import InputError
from ftpipe.settings import get_settings

log = logging.getLogger("ftpipe")


@dataclass(frozen=True)
class Assistant:
    """What applying an assistant changes: the model and the system instruction."""

    id: str
    name: str
    model: str
    instructions: str | None
    source: str  # "catalogue" or "api"


def catalogue_path() -> Path:
    """FTPIPE_ASSISTANTS_FILE, else the catalogue shipped with ftpipe."""
    return get_settings().assistants_file or resources.assistants_file()


def load_catalogue(path: Path | None = None) -> list[Assistant]:
    """The catalogue's assistants; a broken file is a clear error naming it."""
    path = path or catalogue_path()
    if not path.is_file():
        raise InputError(str(path), "no such assistants catalogue (FTPIPE_ASSISTANTS_FILE)")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["assistants"]
        return [
            Assistant(
                e["id"], e.get("name") or e["id"], e["model"], e.get("instructions"), "catalogue"
            )
            for e in entries
        ]
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(str(path), f"is not an assistants catalogue ({error!r})") from error


def api_assistants(client: openai.OpenAI) -> list[Assistant]:
    """The endpoint's assistants; empty where it has no Assistants API."""
    try:
        listed = list(client.beta.assistants.list(limit=100))
    except (openai.NotFoundError, openai.PermissionDeniedError, openai.BadRequestError) as error:
        log.info("The endpoint offers no assistants list (%s); using the catalogue only", error)
        return []
    return [Assistant(a.id, a.name or a.id, a.model, a.instructions, "api") for a in listed]


def list_assistants(client: openai.OpenAI | None = None) -> list[Assistant]:
    """Catalogue first, then the API's assistants whose ids the catalogue does not use."""
    known = load_catalogue()
    if client is not None:
        ids = {a.id for a in known}
        known += [a for a in api_assistants(client) if a.id not in ids]
    return known


def find_assistant(assistant_id: str, client: openai.OpenAI | None = None) -> Assistant:
    """One assistant by id; an unknown id is an error that lists the known ones."""
    assistants = list_assistants(client)
    for assistant in assistants:
        if assistant.id == assistant_id:
            return assistant
    known = ", ".join(a.id for a in assistants) or "none"
    raise InputError(f"assistant {assistant_id!r}", f"is unknown; known assistants: {known}")
