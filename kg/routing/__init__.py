"""Which profile serves a chunk: routing rules (`rules`), the fallback profile a failing chunk
goes to (`fallback`), and the preview of both for `kg admin routing test` (`preview`).

Beside the engine, which asks them per chunk; nothing here is re-exported.
"""
