"""serve/proxy.py: the installed PyTriton's proxy model.py still holds the statement the patch replaces
(else bad requests would silently go back to INTERNAL with tracebacks), and the patch compiles."""

from __future__ import annotations

from pathlib import Path

from glmix_deploy.serve.proxy import patched_proxy_source
from tests.serve.helpers import needs_pytriton


def test_the_installed_pytriton_proxy_is_patched():
    pytriton = needs_pytriton()  # the pytriton.triton module
    source = (Path(pytriton.__file__).parent / "proxy" / "model.py").read_text()  # pytriton/triton.py
    patched = patched_proxy_source(source)
    assert patched != source and "_glmix_bad_request(triton_responses_or_error)" in patched
    compile(patched, "model.py", "exec")
    assert patched_proxy_source("def execute(): pass\n") == "def execute(): pass\n"  # unknown text: unchanged
