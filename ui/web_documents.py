"""The Documents tab: the signed-in user's own documents for Deep Search: upload, list, read, remove."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import gradio as gr

from assistant.errors import NotFound
from assistant.research.documents import add_bytes, documents_of
from assistant.research.readers import KINDS, MAX_FILE_BYTES
from ui.web_context import WebContext, fail, wire

__all__ = ["documents_tab"]

HEADERS = ["id", "title", "kind", "passages", "added"]
SHOWN_CHARS = 20_000  # of a document's text in the reader box


def documents_tab(ctx: WebContext):
    """Build the tab; returns (the table, the function that fills it for the page's load)."""
    gr.Markdown("Your own documents (txt, md, html, pdf) for Deep Search. Only you can see or search them.")
    upload = gr.File(label="Add documents", file_count="multiple", file_types=sorted(KINDS), type="filepath",
                     elem_id="documents-upload")
    table = gr.Dataframe(headers=HEADERS, interactive=False, elem_id="documents", wrap=True,
                         column_widths=["8%", "52%", "10%", "12%", "18%"])
    with gr.Row(equal_height=True):
        doc_id = gr.Number(label="Document id", precision=0, minimum=0, elem_id="document-id", scale=1)
        remove = gr.Button("Remove", variant="stop", elem_id="document-remove", scale=1)
        refresh = gr.Button("Refresh the list", elem_id="documents-refresh", scale=1)
    status = gr.Markdown(elem_id="documents-status")
    text = gr.Textbox(label="The picked document's text", lines=8, max_lines=20, interactive=False,
                      elem_id="document-text")

    def rows(request: gr.Request):
        docs = documents_of(ctx.store).documents(ctx.user(request))
        return [[d.id, d.title, d.kind, d.passages, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(d.created_at))]
                for d in docs[::-1]]  # newest first

    async def on_upload(paths, request: gr.Request):
        user = ctx.user(request)
        lines = []
        for path in paths or []:
            p = Path(path)
            try:
                if p.stat().st_size > MAX_FILE_BYTES:
                    lines.append(f"failed: {p.name}: too large (> {MAX_FILE_BYTES // 2**20} MiB)")
                    continue
                data = p.read_bytes()
            except OSError as err:
                lines.append(f"failed: {p.name}: cannot read the upload: {err.strerror or err}")
                continue
            result = await asyncio.to_thread(add_bytes, ctx.store, user, p.name, data)
            lines.append(result.line())
        if not lines:
            raise fail("pick one or more files to add")
        return rows(request), None, "\n".join(f"- {line}" for line in lines)

    def own(number, request: gr.Request):
        try:
            did = int(number)
        except (TypeError, ValueError) as err:
            raise fail("pick a document in the table, or type its id") from err
        try:
            return documents_of(ctx.store).get(ctx.user(request), did)
        except NotFound as err:  # another user's id reads as missing
            raise fail(err) from err

    def on_pick(evt: gr.SelectData, request: gr.Request):
        doc, body = own(evt.row_value[0], request)
        more = f"\n\n… ({len(body) - SHOWN_CHARS} more characters)" if len(body) > SHOWN_CHARS else ""
        return doc.id, body[:SHOWN_CHARS] + more, f"**{doc.title}** ({doc.kind}, {doc.size} bytes)"

    def on_remove(number, request: gr.Request):
        doc, _ = own(number, request)
        documents_of(ctx.store).remove(ctx.user(request), [doc.id])
        return rows(request), "", f"Removed document {doc.id} ({doc.title})."

    wire(upload.upload, on_upload, [upload], [table, upload, status], "add the documents")
    wire(table.select, on_pick, [], [doc_id, text, status], "open it")
    wire(remove.click, on_remove, [doc_id], [table, text, status], "remove it")
    refresh.click(rows, None, [table], api_name="document_rows")  # also added by `assistant docs add`
    return table, rows
