"""Server errors in a vLLM log: whole offending lines, without vLLM's per-request client errors.

vLLM logs a request for an unknown model (404) or a bad request (400) at ERROR level
("Error with model error=ErrorInfo(... type='NotFoundError' ... code=404)", "Error in preprocessing
prompt inputs" with its traceback). Those are the client's mistakes, answered correctly: one
`curl` for model gpt-4o must not read as a broken server until the next restart. Everything else
at ERROR level, and every traceback outside such a record, is a server error.

>>> log = '''(APIServer pid=7) INFO 11-28 06:00:01 [api_server.py:1] Application startup complete.
... (APIServer pid=7) ERROR 11-28 06:00:02 [serving.py:274] Error with model error=ErrorInfo(message='The model `gpt-4o` does not exist.', type='NotFoundError', param='model', code=404)
... (APIServer pid=7) INFO:     127.0.0.1:5 - "POST /v1/chat/completions HTTP/1.1" 404 Not Found
... (EngineCore pid=9) ERROR 11-28 06:00:03 [core.py:9] EngineCore encountered a fatal error.'''
>>> server_error_lines(log)
['(EngineCore pid=9) ERROR 11-28 06:00:03 [core.py:9] EngineCore encountered a fatal error.']
"""
from __future__ import annotations

import re

ERROR = re.compile(r"\bERROR\b|\bCRITICAL\b|Traceback \(most recent call last\)")
WARNING = re.compile(r"\bWARNING\b")
# a new log record: vLLM's "LEVEL MM-DD HH:MM:SS" or uvicorn's "LEVEL:"
RECORD = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)( \d\d-\d\d \d\d:\d\d:\d\d|:)")
CLIENT = re.compile(
    r"Error with model|\btype='(NotFoundError|BadRequestError)'|\bcode=4\d\d\b|"
    r"Error in preprocessing prompt inputs|\bHTTPStatus\.(NOT_FOUND|BAD_REQUEST)\b")


def server_error_lines(log: str) -> list[str]:
    """Whole lines that show a server error; client errors (4xx) and their tracebacks left out."""
    out: list[str] = []
    in_client_record = False
    for line in log.splitlines():
        new_record = RECORD.search(line) is not None
        if new_record:
            in_client_record = False
        if in_client_record:
            continue                        # the traceback / detail lines of a client error record
        if ERROR.search(line) and not WARNING.search(line):
            if CLIENT.search(line):
                in_client_record = True
                continue
            out.append(line.rstrip())
    return out
