"""Deep Search: questions researched with tools across sources, cross-checked and cited (issue 22).

Every source (the bundled encyclopedia, the user's own documents, the web through SearxNG) is
behind the one interface of `assistant.research.sources`.
"""
