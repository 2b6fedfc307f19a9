"""Personas: the built-in Grok, per-user create/edit/delete, and the `assistant persona` command."""

from __future__ import annotations

import json

import pytest

from assistant.cli import main
from assistant.errors import BadInput, NotFound
from memory import (
    DEFAULT_PERSONA,
    Persona,
    create_persona,
    delete_persona,
    edit_persona,
    get_persona,
    list_personas,
    open_store,
)


@pytest.fixture()
def store(tmp_path, database):
    with open_store(tmp_path, database=database) as s:
        yield s


def test_grok_is_there_for_everyone(store):
    user = store.user("a")
    grok = get_persona(store, user)
    assert grok is DEFAULT_PERSONA and grok.builtin
    assert all(word in grok.style.casefold() for word in ("curious", "direct", "witty"))
    assert "You are Grok." in grok.instructions()
    assert [p.name for p in list_personas(store, user)] == ["Grok"]


def test_create_edit_delete_and_unknown(store):
    user = store.user("a")
    create_persona(store, user, Persona(name="Doctor", voice="Chelsie", style="Calm.", language="en-GB"))
    with pytest.raises(BadInput, match="already exists"):
        create_persona(store, user, Persona(name="doctor"))
    edited = edit_persona(store, user, "Doctor", new_name="Dr. House", style="Blunt.")
    assert edited == Persona(name="Dr. House", voice="Chelsie", style="Blunt.", language="en-GB")
    assert get_persona(store, user, "dr. house") == edited
    delete_persona(store, user, "Dr. House")
    with pytest.raises(NotFound, match=r"no persona called 'Dr\. House'"):
        get_persona(store, user, "Dr. House")
    with pytest.raises(NotFound):
        delete_persona(store, user, "Dr. House")


def test_editing_grok_makes_a_copy_and_deleting_it_restores_the_builtin(store):
    user, other = store.user("a"), store.user("b")
    mine = edit_persona(store, user, "Grok", voice="Ethan", language="de")
    assert not mine.builtin and get_persona(store, user).language == "de"
    assert get_persona(store, other) is DEFAULT_PERSONA  # another user never sees it
    delete_persona(store, user, "Grok")
    assert get_persona(store, user) is DEFAULT_PERSONA
    with pytest.raises(BadInput, match="built in"):
        delete_persona(store, user, "Grok")


@pytest.mark.parametrize(
    "fields",
    [
        {"name": ""},
        {"name": "x" * 65},
        {"name": "bad\nname"},
        {"name": "ok", "language": "english please"},
        {"name": "ok", "style": "s" * 5000},
        {"name": "ok", "voice": ""},
    ],
)
def test_bad_fields_are_rejected_with_a_reason(fields):
    with pytest.raises(BadInput):
        Persona(**fields)


def test_unusual_names_are_stored_exactly(store):
    user = store.user("a")
    for name in ("Robert'); DROP TABLE personas;--", "ממשק 🤖", "Тренер"):
        create_persona(store, user, Persona(name=name, greeting="👋"))
        assert get_persona(store, user, name).name == name
    assert len(list_personas(store, user)) == 4


def test_persona_command(tmp_path, capsys, database):
    base = ["--data-dir", str(tmp_path), "--user", "zoe", *(["--database", database] if database else [])]

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([*argv, *base])
        out, err = capsys.readouterr()
        return code, out, err

    assert run("persona", "create", "Coach", "--style", "Upbeat.", "--voice", "Ethan")[0] == 0
    assert run("persona", "edit", "Coach", "--greeting", "Let's go!")[0] == 0
    code, out, _ = run("persona", "show", "Coach", "--json")
    assert code == 0 and json.loads(out)["greeting"] == "Let's go!"
    code, out, _ = run("persona", "list", "--json")
    assert [p["name"] for p in json.loads(out)] == ["Grok", "Coach"]
    code, _, err = run("persona", "show", "Nobody")
    assert code == 2 and err == "assistant: error: no persona called 'Nobody'; see `assistant persona list`\n"
    assert run("persona", "delete", "Coach")[0] == 0
    code, _, err = run("persona", "create", "X", "--language", "not a code")
    assert code == 2 and "language" in err
