"""The Memory tab: what the assistant remembers about the user; search, add, edit, delete, and each
memory's history (added, replaced by a correction, edited, deleted)."""

from __future__ import annotations

import time

import gradio as gr

from assistant.errors import AssistantError
from memory import recall
from ui.web_context import WebContext, fail, wire

__all__ = ["memory_tab"]

HEADERS = ["id", "text", "kind", "scope", "status", "updated"]
HISTORY_HEADERS = ["when", "action", "before", "after"]
SEARCH_K = 50


def when(ts: float) -> str:
    """A time as people read it: 2026-11-22 21:47 UTC."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def memory_tab(ctx: WebContext):
    """Build the tab; returns the function that fills the table (for the page's load)."""
    gr.Markdown("Pick a memory in the table to edit it, delete it or see its history. A correction you "
                "give in a chat replaces the old fact; the old one stays in the history.")
    with gr.Row(equal_height=True):
        query = gr.Textbox(label="Search", placeholder="what do you remember about …", elem_id="memory-query",
                           max_lines=1, scale=4)
        show_all = gr.Checkbox(label="Include deleted and replaced", elem_id="memory-all", scale=1)
    table = gr.Dataframe(headers=HEADERS, interactive=False, elem_id="memories", wrap=True,
                         column_widths=["7%", "45%", "10%", "12%", "11%", "15%"])
    with gr.Row(equal_height=True):
        mem_id = gr.Number(label="Memory id", precision=0, elem_id="memory-id", scale=1, minimum=0)
        text = gr.Textbox(label="Text (of the picked memory, or of a new one)", elem_id="memory-text", scale=5,
                          max_lines=4)
    with gr.Row():
        save = gr.Button("Save", variant="primary", elem_id="memory-save")
        delete = gr.Button("Delete", variant="stop", elem_id="memory-delete")
        show = gr.Button("History", elem_id="memory-history-go")
        add = gr.Button("Add as a new memory", elem_id="memory-add")
    status = gr.Markdown(elem_id="memory-status")
    history = gr.Dataframe(headers=HISTORY_HEADERS, interactive=False, elem_id="memory-history", wrap=True,
                           label="History of the picked memory")

    def rows(q: str, everything: bool, request: gr.Request):
        user = ctx.user(request)
        q = (q or "").strip()
        if q and not everything:
            items = recall(ctx.store, user, q, k=SEARCH_K)
        else:
            items = ctx.store.memories(user, include_inactive=everything)[::-1]  # newest first
            if q:
                items = [m for m in items if q.casefold() in m.text.casefold()]
        scopes = {i.id: i.name for i in ctx.store.instances(user)}
        return [[m.id, m.text, m.kind, scopes.get(m.instance_id, "everywhere"), m.status, when(m.updated_at)]
                for m in items]

    def own(memory_id, request: gr.Request, active: bool = False):
        """The user's memory with this id, or a clear error (another user's id reads as missing)."""
        try:
            mid = int(memory_id)
        except (TypeError, ValueError) as err:
            raise fail("pick a memory in the table, or type its id") from err
        m = ctx.store.get_memories(ctx.user(request), [mid]).get(mid)
        if m is None or (active and m.status != "active"):
            raise fail(f"you have no {'active ' if active else ''}memory {mid}")
        return m

    def history_rows(memory_id, request: gr.Request):
        m = own(memory_id, request)
        return [[h["at"].replace("T", " ").replace("+00:00", " UTC"), h["action"], h["before"] or "", h["after"] or ""]
                for h in ctx.store.history_of_memories(ctx.user(request), m.id)]

    def on_history(memory_id, request: gr.Request):
        return history_rows(memory_id, request), ""

    def on_pick(q, everything, evt: gr.SelectData, request: gr.Request):
        mid = int(evt.row_value[0])
        m = own(mid, request)
        return m.id, m.text, history_rows(mid, request), ""

    def on_save(memory_id, new_text, q, everything, request: gr.Request):
        m = own(memory_id, request, active=True)
        try:
            ctx.store.edit_memory(ctx.user(request), m.id, (new_text or "").strip())
        except AssistantError as err:
            raise fail(err) from err
        return rows(q, everything, request), history_rows(m.id, request), f"Saved memory {m.id}."

    def on_delete(memory_id, q, everything, request: gr.Request):
        m = own(memory_id, request, active=True)
        ctx.store.delete_memories(ctx.user(request), [m.id])
        return rows(q, everything, request), history_rows(m.id, request), f"Deleted memory {m.id}."

    def on_add(new_text, q, everything, request: gr.Request):
        try:
            mid = ctx.store.add_memory(ctx.user(request), (new_text or "").strip(), kind="fact")
        except AssistantError as err:
            raise fail(err) from err
        return rows(q, everything, request), mid, history_rows(mid, request), f"Added memory {mid}."

    listing = [query, show_all]
    query.submit(rows, listing, [table])
    show_all.input(rows, listing, [table])
    wire(table.select, on_pick, listing, [mem_id, text, history, status], "open it")
    wire(save.click, on_save, [mem_id, text, *listing], [table, history, status], "save")
    wire(delete.click, on_delete, [mem_id, *listing], [table, history, status], "delete")
    wire(show.click, on_history, [mem_id], [history, status], "show the history")
    wire(add.click, on_add, [text, *listing], [table, mem_id, history, status], "add it")

    def load(request: gr.Request):
        return rows("", False, request)

    return table, load
