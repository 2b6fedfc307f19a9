"""Editing a memory (the web UI's Memory tab): in place, with an 'update' history row; only the owner."""

from __future__ import annotations

import pytest

from assistant.errors import BadInput, NotFound
from memory import open_store, recall


def test_edit_changes_the_text_keeps_the_id_and_records_history(tmp_path, database):
    with open_store(tmp_path, database=database) as store:
        ann, ben = store.user("ann"), store.user("ben")
        mid = store.add_memory(ann, "Ann drinks her coffee black.")
        assert recall(store, ann, "coffee")[0].id == mid  # embedded and indexed
        edited = store.edit_memory(ann, mid, "Ann drinks green tea, never coffee.")
        assert edited.id == mid and edited.text == "Ann drinks green tea, never coffee."
        found = recall(store, ann, "green tea")
        assert found and found[0].id == mid and found[0].text == edited.text  # re-embedded, re-indexed
        history = store.history_of_memories(ann, mid)
        assert [h["action"] for h in history] == ["add", "update"]
        assert history[1]["before"] == "Ann drinks her coffee black." and history[1]["after"] == edited.text
        with pytest.raises(NotFound):
            store.edit_memory(ben, mid, "Ben was here.")  # another user's memory reads as missing
        assert store.history_of_memories(ben, mid) == []
        with pytest.raises(BadInput):
            store.edit_memory(ann, mid, "   ")
        store.delete_memories(ann, [mid])
        with pytest.raises(NotFound):
            store.edit_memory(ann, mid, "back again")  # only active memories are edited
        assert store.get_memories(ann, [mid])[mid].text == edited.text
