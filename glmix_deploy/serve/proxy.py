"""A request the served model refuses as the client's error reaches the client as INVALID_ARGUMENT.

PyTriton (0.5-0.7) turns every error of a bound model into INTERNAL (HTTP 500) carrying two Python
tracebacks, ours and its proxy's, server paths included: its proxy `model.py`, which runs inside
Triton's Python-backend stub, re-raises whatever came back from this process. `serve` therefore
hands Triton a copy of that proxy with one change: when the error is a PyTritonBadParameterError
(what serve.server raises for a UserInputError, such as `item 0: not a decodable image`), every
request of the batch is answered with a TritonError of code INVALID_ARG and that one line. Any other
error keeps PyTriton's own path. Should a PyTriton release change the lines this looks for, the
proxy is handed over unchanged and errors stay INTERNAL (tests/serve/test_server.py notices).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

MARKER = "PyTritonBadParameterError: "

_RAISE = """                if triton_responses_or_error is not None and isinstance(triton_responses_or_error, Exception):
                    raise triton_responses_or_error
"""  # noqa: E501 (PyTriton's proxy text, matched verbatim)
_ANSWER = """                if triton_responses_or_error is not None and isinstance(triton_responses_or_error, Exception):
                    bad_request = _glmix_bad_request(triton_responses_or_error)
                    if bad_request is not None:
                        return [pb_utils.InferenceResponse(output_tensors=[], error=bad_request)  # pytype: disable=module-attr
                                for _ in triton_requests]
                    raise triton_responses_or_error
"""  # noqa: E501 (text patched into PyTriton's proxy)
_HELPER = f'''

def _glmix_bad_request(error):
    """(added by glmix-deploy serve) The client's error, refused by the served model: its one line as
    INVALID_ARGUMENT, or None for any other error."""
    marker = {MARKER!r}
    lines = [line for line in str(error).splitlines() if marker in line]
    if not lines:
        return None
    message = lines[-1].split(marker, 1)[1].strip()
    error_type = pb_utils.TritonError  # pytype: disable=module-attr
    code = getattr(error_type, "INVALID_ARG", None)
    return error_type(message) if code is None else error_type(message, code)
'''


def patched_proxy_source(source: str) -> str:
    """PyTriton's proxy `model.py` answering bad requests with INVALID_ARGUMENT; `source` unchanged when
    it does not hold the one statement this replaces."""
    if source.count(_RAISE) != 1:
        return source
    return source.replace(_RAISE, _ANSWER) + _HELPER


class _OneLineBadRequests(logging.Filter):
    """PyTriton logs each refused request with our traceback; a bad request is worth one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if MARKER in text:
            record.msg, record.args = "refused a request: %s", (text.rsplit(MARKER, 1)[1].strip(),)
        return True


_PYTRITON_HANDLER_LOGGER = "pytriton.proxy.inference"  # where PyTriton logs a failed inference callable
_ONE_LINE = _OneLineBadRequests()


@contextlib.contextmanager
def bad_requests_as_invalid_argument() -> Iterator[None]:
    """While open, the models PyTriton loads get the patched proxy (pytriton.models.model.Model). The
    one-line log of refused requests stays on for the life of the process."""
    from pytriton.models.model import Model

    logging.getLogger(_PYTRITON_HANDLER_LOGGER).addFilter(_ONE_LINE)  # a set: adding twice is once

    original = Model.get_proxy_model_files

    def get_proxy_model_files(self):
        files = original(self)
        for key, content in files.items():
            if key.endswith("/model.py"):
                files[key] = patched_proxy_source(content.decode("utf-8")).encode("utf-8")
        return files

    Model.get_proxy_model_files = get_proxy_model_files
    try:
        yield
    finally:
        Model.get_proxy_model_files = original
