"""Persistent memory, personas and instances, in one SQLite file.

The session's whole interface:

    store = open_store(data_dir, embedder=Embedder())     # one per process; thread-safe
    user = store.user("igor")                             # created on first use
    persona = get_persona(store, user, "Grok")            # NotFound for an unknown name
    instance = store.open_instance(user, persona.name)    # its own conversation
    store.append_message(instance, "user", text, attachments=[...], timings={...})
    history = store.history(instance, token_budget=2000)  # oldest first
    memories = recall(store, user, query, instance=instance, k=8, token_budget=400)
    remember(store, user, Exchange(user_text, reply_text, speaker=user.name, message_id=mid),
             instance=instance, extract=model_call)       # in a worker thread, after the reply
"""

from memory.embed import Embedder
from memory.extract import build_extraction_prompt, parse_facts, rule_facts
from memory.personas import (
    DEFAULT_PERSONA,
    Persona,
    create_persona,
    delete_persona,
    edit_persona,
    get_persona,
    list_personas,
)
from memory.recall import recall
from memory.remember import Extractor, outdated_messages, remember
from memory.store import NewMemory, Store, count_tokens, open_store
from memory.types import Exchange, Fact, Instance, Memory, RememberResult, StoredMessage, User

__all__ = [
    "DEFAULT_PERSONA",
    "Embedder",
    "Exchange",
    "Extractor",
    "Fact",
    "Instance",
    "Memory",
    "NewMemory",
    "Persona",
    "RememberResult",
    "Store",
    "StoredMessage",
    "User",
    "build_extraction_prompt",
    "count_tokens",
    "create_persona",
    "delete_persona",
    "edit_persona",
    "get_persona",
    "list_personas",
    "open_store",
    "outdated_messages",
    "parse_facts",
    "recall",
    "remember",
    "rule_facts",
]
